"""The typed event streams of the agent link: what a spawned command, a follower or any
other streaming operation yields, and the one place where a stream's frames become events
and a dropped link becomes `AgentNotConnected`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

from workspace_server.agent import ops, wire
from workspace_server.agent_link.connection import AgentDisconnected, AgentStream, Frame, error_from_reply
from workspace_server.domain.errors import AgentNotConnected, WorkspaceError

# What a command's stream yields (see CommandStream.next).
OutputName = Literal["stdout", "stderr"]


@dataclass(frozen=True, slots=True)
class CommandOutput:
    name: OutputName
    data: bytes


@dataclass(frozen=True, slots=True)
class CommandExit:
    code: int
    timed_out: bool


@dataclass(frozen=True, slots=True)
class CommandFailed:
    """The agent reported an error after the command started (its code and message)."""

    error: WorkspaceError


@dataclass(frozen=True, slots=True)
class CommandEnded:
    """The agent ended the stream without an exit status."""


CommandEvent = CommandOutput | CommandExit | CommandFailed | CommandEnded
RAN_DISCONNECTED = "the sandbox agent disconnected while the command ran"
OUTPUT_NAMES: dict[int, OutputName] = {wire.OUT: "stdout", wire.ERR: "stderr"}


@contextlib.contextmanager
def map_disconnect(sandbox_id: str, reason: str | None = None) -> Iterator[None]:
    """AgentDisconnected -> AgentNotConnected (with `reason`, if given)."""
    try:
        yield
    except AgentDisconnected:
        if reason is None:
            raise AgentNotConnected(sandbox_id) from None
        raise AgentNotConnected(sandbox_id, reason) from None


Extra = TypeVar("Extra")


class EventStream(Generic[Extra]):
    """A stream whose frames are output, an error, its end, or messages of its own kind
    (`_message`, e.g. a command's exit). Closing it closes the agent's stream."""

    disconnected: ClassVar[str] = "the sandbox agent disconnected"

    def __init__(self, sandbox_id: str, stream: AgentStream) -> None:
        self.sandbox_id = sandbox_id
        self._stream = stream

    def _message(self, payload: dict[str, Any]) -> Extra | None:
        """This stream's own message kinds; None skips the message."""
        return None

    def _event(self, frame: Frame) -> Extra | CommandOutput | CommandFailed | CommandEnded | None:
        kind, payload = frame
        if kind in OUTPUT_NAMES:
            return CommandOutput(OUTPUT_NAMES[kind], payload)
        if kind == wire.MSG:
            if payload.get("type") == ops.ERROR:
                return CommandFailed(error_from_reply(payload))
            return self._message(payload)
        if kind == wire.CLOSE:
            return CommandEnded()
        return None

    async def next(self) -> Extra | CommandOutput | CommandFailed | CommandEnded:
        """The next event. A dropped link raises AgentNotConnected (with `disconnected`)."""
        with map_disconnect(self.sandbox_id, self.disconnected):
            while True:
                event = self._event(await self._stream.recv())
                if event is not None:
                    return event

    def next_nowait(self) -> Extra | CommandOutput | CommandFailed | CommandEnded | None:
        """The next event if one is already here (lets callers coalesce output)."""
        with map_disconnect(self.sandbox_id, self.disconnected):
            while (frame := self._stream.recv_nowait()) is not None:
                event = self._event(frame)
                if event is not None:
                    return event
            return None

    def close(self) -> None:
        self._stream.close()


class CommandStream(EventStream[CommandExit]):
    """A spawned command's stream: its start, its output and end, and its control
    (stdin, kill, resize). Closing it before the command exits kills the command."""

    disconnected = RAN_DISCONNECTED

    async def started(self) -> int:
        """The command's pid, once the agent started it; its error reply raises."""
        with map_disconnect(self.sandbox_id):
            started = await self._stream.recv_message()
        return int(started["pid"])

    def _message(self, payload: dict[str, Any]) -> CommandExit | None:
        if payload.get("type") == ops.EXIT:
            return CommandExit(int(payload["code"]), bool(payload.get("timed_out")))
        return None

    async def send_stdin(self, data: bytes) -> None:
        with map_disconnect(self.sandbox_id):
            await self._stream.send_data(data)

    async def close_stdin(self) -> None:
        with map_disconnect(self.sandbox_id):
            await self._stream.send_message(ops.eof())

    async def kill(self, signum: int) -> None:
        with map_disconnect(self.sandbox_id):
            await self._stream.send_message(ops.kill(signum))

    async def resize(self, cols: int, rows: int) -> None:
        with map_disconnect(self.sandbox_id):
            await self._stream.send_message(ops.resize(cols, rows))
