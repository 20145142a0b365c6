"""The host's side of the agent's background-process and watch streams (agent/ops.py:
FOLLOW, STDIN, WATCH): what services read from them, with the link's failures mapped to
domain errors like every other call of SandboxAgent."""

from __future__ import annotations

from collections.abc import AsyncIterable
from dataclasses import dataclass
from typing import Any

from workspace_server.agent import ops, wire
from workspace_server.agent_link.connection import AgentStream, StreamEnded, error_from_reply
from workspace_server.agent_link.streams import (
    CommandEnded,
    CommandFailed,
    CommandOutput,
    EventStream,
    map_disconnect,
)

FOLLOW_DISCONNECTED = "the sandbox agent disconnected; follow again from the last offset"


@dataclass(frozen=True, slots=True)
class OutputDropped:
    """Output bytes [offset, end) were no longer kept when the follower reached them."""

    offset: int
    end: int


@dataclass(frozen=True, slots=True)
class ProcessEnd:
    """A background process's end, after all of its output (ops.exit_info)."""

    code: int
    signal: int | None
    finished_at: str | None
    timed_out: bool
    end: int


FollowEvent = CommandOutput | OutputDropped | ProcessEnd | CommandFailed | CommandEnded


class FollowStream(EventStream[OutputDropped | ProcessEnd]):
    """A follower of a background process's output log (ops.FOLLOW). Closing it only stops
    following."""

    disconnected = FOLLOW_DISCONNECTED

    async def started(self) -> dict[str, Any]:
        """pid, tag, offset (where the replay begins) and dropped; an error reply raises."""
        with map_disconnect(self.sandbox_id):
            return await self._stream.recv_message()

    def _message(self, payload: dict[str, Any]) -> OutputDropped | ProcessEnd | None:
        reply = payload.get("type")
        if reply == ops.DROPPED:
            return OutputDropped(int(payload["offset"]), int(payload["end"]))
        if reply == ops.EXIT:
            signum = payload.get("signal")
            finished = payload.get("finished_at")
            return ProcessEnd(
                int(payload["code"]),
                int(signum) if isinstance(signum, int) else None,
                str(finished) if isinstance(finished, str) else None,
                bool(payload.get("timed_out")),
                int(payload["end"]),
            )
        return None


class WatchStream:
    """A file watch (ops.WATCH): JSON lines of events as data. Closing it removes the watch."""

    def __init__(self, sandbox_id: str, stream: AgentStream) -> None:
        self.sandbox_id = sandbox_id
        self._stream = stream

    async def ready(self) -> None:
        with map_disconnect(self.sandbox_id):
            await self._stream.recv_message()

    async def next(self) -> bytes | CommandFailed | CommandEnded:
        """A piece of the JSON lines, or how the watch ended."""
        with map_disconnect(self.sandbox_id, "the sandbox agent disconnected"):
            while True:
                kind, payload = await self._stream.recv()
                if kind == wire.OUT:
                    return bytes(payload)
                if kind == wire.MSG and payload.get("type") == ops.ERROR:
                    return CommandFailed(error_from_reply(payload))
                if kind == wire.CLOSE or kind == wire.MSG:
                    return CommandEnded()

    def close(self) -> None:
        self._stream.close()


async def feed_stdin(sandbox_id: str, stream: AgentStream, chunks: AsyncIterable[bytes]) -> int:
    """The STDIN operation's conversation; the byte count the agent wrote."""
    try:
        with map_disconnect(sandbox_id):
            # No wait for "ready": the data may go at once (the window bounds it), which
            # saves a round trip; an early refusal ends the stream and is the answer below.
            try:
                async for chunk in chunks:
                    if chunk:
                        await stream.send_data(chunk)
                await stream.send_message(ops.eof())
            except StreamEnded:
                pass  # the agent stopped early (the process exited...): its answer says why
            answer = await stream.recv_message()  # "ready", or the error that says why not
            if answer.get("type") == ops.READY:
                answer = await stream.recv_message()
        return int(answer.get("written", 0))
    finally:
        stream.close()
