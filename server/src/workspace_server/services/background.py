"""Background processes: started detached from any client, followed by output offset.

The agent owns them (processes, output logs on the sandbox's disk, exit statuses), so
nothing here is lost when a client disconnects or the server restarts: every call is one
request to the agent, and a follower is a stream that resumes at any offset.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

from workspace_server.agent_link.background import FollowStream, OutputDropped, ProcessEnd
from workspace_server.agent_link.streams import CommandOutput, OutputName
from workspace_server.config import Settings
from workspace_server.domain.errors import AgentNotConnected, InvalidRequest, ResourceExhausted
from workspace_server.services.event_streams import ProcessEvent, Utf8Stream, coalesced, stream_error
from workspace_server.services.lifecycle import LifecycleService
from workspace_server.services.processes import START_TIMEOUT, RunCommand, spawn_args
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
    def __init__(
        self, sandboxes: SandboxService, settings: Settings, lifecycle: LifecycleService | None = None
    ) -> None:
        self.sandboxes = sandboxes
        self.settings = settings
        self.lifecycle = lifecycle

    async def start(self, sandbox_id: str, start: StartCommand) -> dict[str, Any]:
        check_tag(start.tag)
        log_bytes = start.log_bytes if start.log_bytes is not None else self.settings.process_log_bytes
        if not MIN_LOG_BYTES <= log_bytes <= MAX_LOG_BYTES:
            raise InvalidRequest(f"log_bytes must be between {MIN_LOG_BYTES} and {MAX_LOG_BYTES}", field="log_bytes")
        if self.lifecycle is None:
            return await self._start_now(sandbox_id, start, log_bytes)
        async with self.lifecycle.command_start(sandbox_id):  # a paused sandbox is resumed first
            return await self._start_now(sandbox_id, start, log_bytes)

    async def _start_now(self, sandbox_id: str, start: StartCommand, log_bytes: int) -> dict[str, Any]:
        args = spawn_args(self.sandboxes.record(sandbox_id), start.command)
        agent = self.sandboxes.agent(sandbox_id)
        try:
            async with asyncio.timeout(max(START_TIMEOUT, start.command.timeout or 0)):
                return await agent.start(
                    args.argv,
                    args.env,
                    args.cwd,
                    args.user,
                    args.timeout,
                    start.stdin,
                    start.tag,
                    log_bytes,
                    self.settings.process_retention_seconds,
                )
        except TimeoutError:
            raise ResourceExhausted(
                f"sandbox {sandbox_id} could not start the command in time: its processes may be using all of "
                "its memory or pids; wait or kill some, then retry",
                sandbox_id=sandbox_id,
            ) from None

    async def info(self, sandbox_id: str, pid_or_tag: str) -> dict[str, Any]:
        return await self.sandboxes.agent(sandbox_id).process(parse_target(pid_or_tag))

    async def wait(self, sandbox_id: str, pid_or_tag: str, timeout: float) -> dict[str, Any]:
        if not 0 <= timeout <= MAX_WAIT:
            raise InvalidRequest(f"timeout must be between 0 and {MAX_WAIT:g} seconds", field="timeout")
        target = parse_target(pid_or_tag)
        async with asyncio.timeout(timeout + START_TIMEOUT):  # the agent answers at the timeout
            return await self.sandboxes.agent(sandbox_id).wait(target, timeout)

    async def kill(self, sandbox_id: str, pid_or_tag: str, signal: int) -> None:
        if not 1 <= signal <= 64:
            raise InvalidRequest("signal must be between 1 and 64", field="signal")
        await self.sandboxes.agent(sandbox_id).kill_process(parse_target(pid_or_tag), signal)

    async def close_stdin(self, sandbox_id: str, pid_or_tag: str) -> None:
        await self.sandboxes.agent(sandbox_id).close_stdin(parse_target(pid_or_tag))

    async def send_stdin(self, sandbox_id: str, pid_or_tag: str, body: AsyncIterable[bytes]) -> int:
        """Feed the body to the process's stdin, as fast as the process reads it."""
        return await self.sandboxes.agent(sandbox_id).send_stdin(parse_target(pid_or_tag), body)

    async def follow(
        self, sandbox_id: str, pid_or_tag: str, offset: int, keepalive: float
    ) -> AsyncIterator[ProcessEvent | None]:
        """Replay the kept output from `offset`, then follow it live; errors before the
        first event raise here. None is a keepalive tick; closing only stops following."""
        stream = await self.sandboxes.agent(sandbox_id).follow(parse_target(pid_or_tag), offset)
        try:
            started = await stream.started()
        except BaseException:
            stream.close()
            raise
        return self._events(sandbox_id, stream, started, keepalive)

    async def _events(
        self, sandbox_id: str, stream: FollowStream, started: dict[str, Any], keepalive: float
    ) -> AsyncIterator[ProcessEvent | None]:
        decoders: dict[OutputName, Utf8Stream] = {"stdout": Utf8Stream(), "stderr": Utf8Stream()}
        offset = int(started["offset"])

        def flush(name: OutputName) -> ProcessEvent | None:
            """What a decoder holds back (an incomplete character) at a switch or the end."""
            held = decoders[name].pending()
            if not held:
                return None
            return ProcessEvent(name, {"data": decoders[name].flush(), "offset": offset - held, "end": offset})

        self.sandboxes.activity.follow(sandbox_id)
        try:
            yield ProcessEvent(
                "start",
                {"pid": started["pid"], "tag": started.get("tag"), "offset": offset, "dropped": started["dropped"]},
            )
            agent_events = coalesced(stream, keepalive)
            async with contextlib.aclosing(agent_events):
                async for event in agent_events:
                    if event is None:
                        yield None
                        continue
                    if isinstance(event, CommandOutput):
                        other: OutputName = "stderr" if event.name == "stdout" else "stdout"
                        if (tail := flush(other)) is not None:
                            yield tail
                        name = event.name
                        begin = offset - decoders[name].pending()
                        offset += len(event.data)
                        text = decoders[name].feed(event.data)
                        if text:
                            yield ProcessEvent(
                                name, {"data": text, "offset": begin, "end": offset - decoders[name].pending()}
                            )
                        continue
                    for output_name in decoders:
                        if (tail := flush(output_name)) is not None:
                            yield tail
                    if isinstance(event, OutputDropped):
                        offset = event.end
                        yield ProcessEvent("dropped", {"offset": event.offset, "end": event.end})
                    elif isinstance(event, ProcessEnd):
                        yield ProcessEvent(
                            "exit",
                            {
                                "code": event.code,
                                "signal": event.signal,
                                "finished_at": event.finished_at,
                                "timed_out": event.timed_out,
                                "end": event.end,
                            },
                        )
                        return
                    else:
                        yield stream_error(event)
                        return
        except AgentNotConnected as exc:
            yield stream_error(exc)
        finally:
            self.sandboxes.activity.unfollow(sandbox_id)
            stream.close()
