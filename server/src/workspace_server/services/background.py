"""Background processes: started detached from any client, followed by output offset.

The agent owns them (processes, output logs on the sandbox's disk, exit statuses), so
nothing here is lost when a client disconnects or the server restarts: every call is one
request to the agent, and a follower is a stream that resumes at any offset.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from workspace_server.agent import wire
from workspace_server.agent_link.connection import AgentDisconnected, AgentStream, StreamEnded
from workspace_server.config import Settings
from workspace_server.domain.errors import AgentNotConnected, InvalidRequest, ResourceExhausted
from workspace_server.services.processes import (
    COALESCE_BYTES,
    START_TIMEOUT,
    ProcessEvent,
    RunCommand,
    Utf8Stream,
    agent_failure,
    spawn_request,
)
from workspace_server.services.sandboxes import SandboxService

TAG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_WAIT = 60.0
MIN_LOG_BYTES = 64 * 1024
MAX_LOG_BYTES = 1 << 30


@dataclass
class StartCommand:
    command: RunCommand
    tag: str | None = None
    stdin: bool = False
    log_bytes: int | None = None


def parse_target(pid_or_tag: str) -> int | str:
    """A path's `{pid_or_tag}`: all digits is a pid, anything else must be a valid tag."""
    if pid_or_tag.isdigit():
        return int(pid_or_tag)
    if not TAG_PATTERN.fullmatch(pid_or_tag):
        raise InvalidRequest(f"{pid_or_tag!r} is neither a pid nor a valid tag", field="pid_or_tag")
    return pid_or_tag


def check_tag(tag: str | None) -> None:
    if tag is not None and (not TAG_PATTERN.fullmatch(tag) or tag.isdigit()):
        raise InvalidRequest(
            "tag must be 1-64 characters of [A-Za-z0-9._-], start with a letter or digit, and not be all digits",
            field="tag",
        )


class BackgroundProcessService:
    def __init__(self, sandboxes: SandboxService, settings: Settings) -> None:
        self.sandboxes = sandboxes
        self.settings = settings

    async def _open(self, sandbox_id: str, request: dict[str, Any]) -> AgentStream:
        connection = self.sandboxes.connection(sandbox_id)
        try:
            return await connection.open(request)
        except AgentDisconnected:
            raise AgentNotConnected(sandbox_id) from None

    async def _request(self, sandbox_id: str, request: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        stream = await self._open(sandbox_id, request)
        try:
            async with asyncio.timeout(timeout):
                return await stream.recv_message()
        except AgentDisconnected:
            raise AgentNotConnected(sandbox_id) from None
        finally:
            stream.close()

    async def start(self, sandbox_id: str, start: StartCommand) -> dict[str, Any]:
        check_tag(start.tag)
        log_bytes = start.log_bytes if start.log_bytes is not None else self.settings.process_log_bytes
        if not MIN_LOG_BYTES <= log_bytes <= MAX_LOG_BYTES:
            raise InvalidRequest(f"log_bytes must be between {MIN_LOG_BYTES} and {MAX_LOG_BYTES}", field="log_bytes")
        request = spawn_request(self.sandboxes.record(sandbox_id), start.command)
        request.update(
            op="start",
            stdin=start.stdin,
            tag=start.tag,
            log_bytes=log_bytes,
            retention=self.settings.process_retention_seconds,
        )
        try:
            answer = await self._request(sandbox_id, request, max(START_TIMEOUT, start.command.timeout or 0))
        except TimeoutError:
            raise ResourceExhausted(
                f"sandbox {sandbox_id} could not start the command in time: its processes may be using all of "
                "its memory or pids; wait or kill some, then retry",
                sandbox_id=sandbox_id,
            ) from None
        return dict(answer["process"])

    async def info(self, sandbox_id: str, pid_or_tag: str) -> dict[str, Any]:
        answer = await self._request(sandbox_id, {"op": "process", "target": parse_target(pid_or_tag)})
        return dict(answer["process"])

    async def wait(self, sandbox_id: str, pid_or_tag: str, timeout: float) -> dict[str, Any]:
        if not 0 <= timeout <= MAX_WAIT:
            raise InvalidRequest(f"timeout must be between 0 and {MAX_WAIT:g} seconds", field="timeout")
        request = {"op": "wait", "target": parse_target(pid_or_tag), "timeout": timeout}
        answer = await self._request(sandbox_id, request, timeout + START_TIMEOUT)
        return dict(answer["process"])

    async def kill(self, sandbox_id: str, pid_or_tag: str, signal: int) -> None:
        if not 1 <= signal <= 64:
            raise InvalidRequest("signal must be between 1 and 64", field="signal")
        await self._request(sandbox_id, {"op": "kill", "target": parse_target(pid_or_tag), "signal": signal})

    async def close_stdin(self, sandbox_id: str, pid_or_tag: str) -> None:
        await self._request(sandbox_id, {"op": "close_stdin", "target": parse_target(pid_or_tag)})

    async def send_stdin(self, sandbox_id: str, pid_or_tag: str, body: AsyncIterable[bytes]) -> int:
        """Feed the body to the process's stdin, as fast as the process reads it: the agent
        grants credit only for bytes written to the pipe, and we read the body only as
        credit allows."""
        stream = await self._open(sandbox_id, {"op": "stdin", "target": parse_target(pid_or_tag)})
        try:
            await stream.recv_message()  # "ready", or the error that says why not
            try:
                async for chunk in body:
                    if chunk:
                        await stream.send_data(chunk)
                await stream.send_message({"type": "eof"})
            except StreamEnded:
                pass  # the agent stopped early: its answer (an error) is waiting
            answer = await stream.recv_message()
            return int(answer.get("written", 0))
        except AgentDisconnected:
            raise AgentNotConnected(sandbox_id) from None
        finally:
            stream.close()

    async def follow(
        self, sandbox_id: str, pid_or_tag: str, offset: int, keepalive: float
    ) -> AsyncIterator[ProcessEvent | None]:
        """Replay the kept output from `offset`, then follow it live; errors before the
        first event raise here. None is a keepalive tick; closing only stops following."""
        stream = await self._open(sandbox_id, {"op": "follow", "target": parse_target(pid_or_tag), "offset": offset})
        try:
            started = await stream.recv_message()
        except AgentDisconnected:
            stream.close()
            raise AgentNotConnected(sandbox_id) from None
        except BaseException:
            stream.close()
            raise
        return _follow_events(sandbox_id, stream, started, keepalive)


async def _follow_events(
    sandbox_id: str, stream: AgentStream, started: dict[str, Any], keepalive: float
) -> AsyncIterator[ProcessEvent | None]:
    names = {wire.OUT: "stdout", wire.ERR: "stderr"}
    decoders = {wire.OUT: Utf8Stream(), wire.ERR: Utf8Stream()}
    offset = int(started["offset"])
    pending: tuple[int, Any] | None = None

    def flush(kind: int) -> ProcessEvent | None:
        """What a decoder still holds: an incomplete character at a stream switch or the end."""
        held = decoders[kind].pending()
        if not held:
            return None
        text = decoders[kind].flush()
        return ProcessEvent(names[kind], {"data": text, "offset": offset - held, "end": offset})

    try:
        yield ProcessEvent(
            "start",
            {"pid": started["pid"], "tag": started.get("tag"), "offset": offset, "dropped": started.get("dropped", 0)},
        )
        while True:
            if pending is not None:
                (kind, payload), pending = pending, None
            elif (ready := stream.recv_nowait()) is not None:
                kind, payload = ready
                await asyncio.sleep(0)  # let a client that left cancel us
            else:
                try:
                    async with asyncio.timeout(keepalive):
                        kind, payload = await stream.recv()
                except TimeoutError:
                    yield None
                    continue
            if kind in decoders:
                other = wire.ERR if kind == wire.OUT else wire.OUT
                if (tail := flush(other)) is not None:
                    yield tail
                pieces, size = [payload], len(payload)
                while size < COALESCE_BYTES and (more := stream.recv_nowait()) is not None:
                    if more[0] != kind:
                        pending = more
                        break
                    pieces.append(more[1])
                    size += len(more[1])
                data = b"".join(pieces)
                begin = offset - decoders[kind].pending()
                offset += len(data)
                text = decoders[kind].feed(data)
                if text:
                    end = offset - decoders[kind].pending()
                    yield ProcessEvent(names[kind], {"data": text, "offset": begin, "end": end})
                continue
            for k in decoders:
                if (tail := flush(k)) is not None:
                    yield tail
            if kind == wire.MSG and payload.get("type") == "dropped":
                offset = int(payload["end"])
                yield ProcessEvent("dropped", {"offset": int(payload["offset"]), "end": offset})
            elif kind == wire.MSG and payload.get("type") == "exit":
                yield ProcessEvent("exit", exit_data(payload))
                return
            elif kind == wire.MSG and payload.get("type") == "error":
                failure = agent_failure(payload)
                yield ProcessEvent("error", {"code": failure.code, "message": failure.message})
                return
            elif kind == wire.CLOSE:
                yield ProcessEvent("error", {"code": "INTERNAL", "message": "the agent ended the stream"})
                return
    except AgentDisconnected:
        yield ProcessEvent(
            "error",
            {
                "code": "AGENT_NOT_CONNECTED",
                "message": f"sandbox {sandbox_id}: the sandbox agent disconnected; reconnect at the last offset",
            },
        )
    finally:
        stream.close()


def exit_data(message: dict[str, Any]) -> dict[str, Any]:
    return {
        "code": int(message["code"]),
        "signal": message.get("signal"),
        "finished_at": message.get("finished_at"),
        "timed_out": bool(message.get("timed_out")),
        "end": int(message["end"]),
    }
