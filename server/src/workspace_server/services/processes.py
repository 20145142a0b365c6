"""Running commands in a sandbox: to completion, or as a stream of events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import to_json

from workspace_server.agent_link.streams import CommandExit, CommandFailed, CommandOutput, CommandStream, OutputName
from workspace_server.domain.errors import AgentNotConnected, InvalidRequest, ProcessTimeout, ResourceExhausted
from workspace_server.domain.models import ImageConfig, Sandbox
from workspace_server.domain.paths import sandbox_path
from workspace_server.services.event_streams import ProcessEvent, Utf8Stream, coalesced, stream_error
from workspace_server.services.lifecycle import LifecycleService
from workspace_server.services.sandboxes import SandboxService

HOST_TIMEOUT_MARGIN = 5.0  # the agent enforces timeouts; this only guards a wedged agent
# How long a command may take to start: its exec may wait for memory in a sandbox whose
# processes use all of memory_mb, so at least as long as the command's own timeout.
START_TIMEOUT = 30.0
TIMEOUT_OUTPUT_TAIL = 64 * 1024
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass
class RunCommand:
    command: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    timeout: float | None = None
    user: str | None = None
    stdin: str | None = None


class EncodedOutput:
    """One stream of a `run`'s output, kept as the JSON string it is sent as.

    Control bytes cost six bytes each in JSON (`\\u0001`) and a replacement character three,
    so a bound on raw bytes does not bound the response: this one counts what is sent.
    The text is decoded and encoded once, chunk by chunk, and never held as a `str`."""

    def __init__(self, limit: int) -> None:
        self._decoder = Utf8Stream()
        self._limit = limit
        self.json = bytearray(b'"')  # the JSON string literal, closed by `finish`
        self.truncated = False
        self._tail = bytearray()  # the last raw bytes, for a timeout's error details

    def feed(self, data: bytes) -> None:
        self._tail += data
        if len(self._tail) > 2 * TIMEOUT_OUTPUT_TAIL:
            del self._tail[:-TIMEOUT_OUTPUT_TAIL]
        if not self.truncated:
            self._append(self._decoder.feed(data))

    def finish(self) -> bytearray:
        """The complete JSON string literal (quotes included; not copied)."""
        if not self.truncated:
            self._append(self._decoder.flush())
        self.json += b'"'
        return self.json

    def tail(self) -> str:
        return decode(self._tail[-TIMEOUT_OUTPUT_TAIL:])

    def _append(self, text: str) -> None:
        if not text:
            return
        encoded = to_json(text)
        room = self._limit - (len(self.json) - 1)
        if len(encoded) - 2 > room:
            encoded = _longest_prefix_encoding(text, room)
            self.truncated = True
        self.json += memoryview(encoded)[1:-1]


def _longest_prefix_encoding(text: str, room: int) -> bytes:
    """The JSON encoding of the longest prefix of `text` whose escaped body fits in `room`
    bytes (never cutting an escape sequence or a character)."""
    low, high = 0, min(len(text), room)
    while low < high:
        middle = (low + high + 1) // 2
        if len(to_json(text[:middle])) - 2 <= room:
            low = middle
        else:
            high = middle - 1
    return to_json(text[:low])


@dataclass
class CommandResult:
    """A finished `run`: its output as JSON string literals, ready to send (EncodedOutput)."""

    exit_code: int
    stdout_json: bytearray
    stderr_json: bytearray
    pid: int
    stdout_truncated: bool = False
    stderr_truncated: bool = False

    @property
    def stdout(self) -> str:
        return str(json.loads(self.stdout_json))

    @property
    def stderr(self) -> str:
        return str(json.loads(self.stderr_json))

    def body(self) -> list[bytes | bytearray]:
        """The response body (docs/api.md) in pieces, so the output is never copied whole."""
        return [
            b'{"exit_code":%d,"stdout":' % self.exit_code,
            self.stdout_json,
            b',"stderr":',
            self.stderr_json,
            b',"pid":%d,"stdout_truncated":%s,"stderr_truncated":%s}'
            % (self.pid, _json_bool(self.stdout_truncated), _json_bool(self.stderr_truncated)),
        ]


def _json_bool(value: bool) -> bytes:
    return b"true" if value else b"false"


def base_environment(user: str | None, sandbox: Sandbox, pty: bool, image: ImageConfig | None = None) -> dict[str, str]:
    root = user == "root"
    env = {
        "PATH": BASE_PATH,
        "HOME": "/root" if root else "/home/user",
        "USER": "root" if root else "user",
        "LOGNAME": "root" if root else "user",
        "SHELL": "/bin/bash",
        "LANG": "C.UTF-8",
        "WORKSPACE_SANDBOX_ID": sandbox.id,
    }
    if pty:
        env["TERM"] = "xterm-256color"
    if image is not None:  # the image's Env, under the sandbox's and the command's own
        env.update(image.env)
    env.update(sandbox.env)
    return env


@dataclass(frozen=True)
class SpawnArgs:
    """A checked command, as the agent's spawn operation takes it."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    user: str
    timeout: float | None
    stdin: bool
    pty: dict[str, int] | None


def spawn_args(
    sandbox: Sandbox, command: RunCommand, *, pty: dict[str, int] | None = None, image: ImageConfig | None = None
) -> SpawnArgs:
    if not command.command:
        raise InvalidRequest("command must not be empty", field="command")
    if "\x00" in command.command or any("\x00" in a for a in command.args):
        raise InvalidRequest("command and args must not contain NUL bytes", field="command")
    if command.user not in (None, "user", "root"):
        raise InvalidRequest("user must be 'user' or 'root'", field="user")
    if command.timeout is not None and command.timeout <= 0:
        raise InvalidRequest("timeout must be a positive number of seconds", field="timeout")
    env = base_environment(command.user, sandbox, pty is not None, image)
    env.update(command.env)
    if any("\x00" in k or "=" in k or not k or "\x00" in v for k, v in env.items()):
        raise InvalidRequest("env names must be non-empty without '=' or NUL; values without NUL", field="env")
    default_cwd = (image.working_dir if image is not None else None) or "/workspace"
    return SpawnArgs(
        argv=[command.command, *command.args],
        env=env,
        cwd=sandbox_path(command.cwd, field="cwd") if command.cwd else default_cwd,
        user=command.user or "user",
        timeout=command.timeout,
        stdin=command.stdin is not None or pty is not None,
        pty=pty,
    )


class ProcessService:
    """Runs commands in sandboxes: to completion (`run`), as events (`stream`), or started
    for another service (`start`, used by the PTYs)."""

    def __init__(self, sandboxes: SandboxService, lifecycle: LifecycleService | None = None) -> None:
        self.sandboxes = sandboxes
        self.lifecycle = lifecycle

    async def start(
        self, sandbox_id: str, command: RunCommand, pty: dict[str, int] | None = None
    ) -> tuple[CommandStream, int]:
        """Start the command; returns its stream once the agent reports the pid. A paused
        sandbox is resumed first, or refused (services/lifecycle.py)."""
        if self.lifecycle is None:
            return await self._start_now(sandbox_id, command, pty)
        async with self.lifecycle.command_start(sandbox_id):
            return await self._start_now(sandbox_id, command, pty)

    async def _start_now(
        self, sandbox_id: str, command: RunCommand, pty: dict[str, int] | None
    ) -> tuple[CommandStream, int]:
        sandbox = self.sandboxes.record(sandbox_id)
        args = spawn_args(sandbox, command, pty=pty, image=self.sandboxes.image_config(sandbox))
        agent = self.sandboxes.agent(sandbox_id)
        stream = await agent.spawn(args.argv, args.env, args.cwd, args.user, args.timeout, args.stdin, args.pty)
        try:
            async with asyncio.timeout(max(START_TIMEOUT, command.timeout or 0)):
                pid = await stream.started()
            if command.stdin is not None:
                await stream.send_stdin(command.stdin.encode())
                await stream.close_stdin()
        except TimeoutError:
            stream.close()
            raise ResourceExhausted(
                f"sandbox {sandbox_id} could not start the command in time: its processes may be using all of "
                "its memory or pids; wait or kill some, then retry",
                sandbox_id=sandbox_id,
            ) from None
        except BaseException:
            stream.close()
            raise
        return stream, pid

    async def run(self, sandbox_id: str, command: RunCommand, max_output: int) -> CommandResult:
        """Run to completion. Each stream keeps at most `max_output` bytes of its JSON
        encoding (what the response carries); beyond, it is cut and marked truncated."""
        began = time.perf_counter()
        stream, pid = await self.start(sandbox_id, command)
        outputs: dict[OutputName, EncodedOutput] = {
            "stdout": EncodedOutput(max_output),
            "stderr": EncodedOutput(max_output),
        }
        out, err = outputs["stdout"], outputs["stderr"]
        self.sandboxes.activity.follow(sandbox_id)
        try:
            deadline = None if command.timeout is None else command.timeout + HOST_TIMEOUT_MARGIN
            async with asyncio.timeout(deadline):
                while True:
                    event = await stream.next()
                    if isinstance(event, CommandOutput):
                        outputs[event.name].feed(event.data)
                    elif isinstance(event, CommandFailed):
                        raise event.error
                    elif isinstance(event, CommandExit):
                        if event.timed_out:
                            raise timeout_error(command.timeout, out, err)
                        self.sandboxes.metrics.exec_seconds.observe(time.perf_counter() - began)
                        return CommandResult(event.code, out.finish(), err.finish(), pid, out.truncated, err.truncated)
                    else:
                        raise AgentNotConnected(sandbox_id, "the agent ended the command without an exit status")
        except TimeoutError:
            raise timeout_error(command.timeout, out, err) from None
        finally:
            self.sandboxes.activity.unfollow(sandbox_id)
            stream.close()

    async def stream(
        self, sandbox_id: str, command: RunCommand, keepalive: float
    ) -> tuple[int, AsyncIterator[ProcessEvent | None]]:
        """Start the command (errors raise here, before any event), then yield its events.

        None is a keepalive tick. Closing the iterator early kills the command."""
        stream, pid = await self.start(sandbox_id, command)

        async def events() -> AsyncIterator[ProcessEvent | None]:
            decoders: dict[OutputName, Utf8Stream] = {"stdout": Utf8Stream(), "stderr": Utf8Stream()}
            self.sandboxes.activity.follow(sandbox_id)
            try:
                yield ProcessEvent("start", {"pid": pid})
                agent_events = coalesced(stream, keepalive)
                async with contextlib.aclosing(agent_events):
                    async for event in agent_events:
                        if event is None:
                            yield None
                        elif isinstance(event, CommandOutput):
                            text = decoders[event.name].feed(event.data)  # returned as is, no copy
                            if text:
                                yield ProcessEvent(event.name, {"data": text})
                        elif isinstance(event, CommandExit):
                            for output_name, decoder in decoders.items():
                                tail = decoder.flush()
                                if tail:
                                    yield ProcessEvent(output_name, {"data": tail})
                            if event.timed_out:
                                yield ProcessEvent(
                                    "error",
                                    {
                                        "code": "PROCESS_TIMEOUT",
                                        "message": f"command timed out after {command.timeout} s and was killed",
                                    },
                                )
                            else:
                                yield ProcessEvent("exit", {"code": event.code})
                            return
                        else:
                            yield stream_error(event)
                            return
            except AgentNotConnected as exc:
                yield stream_error(exc)
            finally:
                self.sandboxes.activity.unfollow(sandbox_id)
                stream.close()

        return pid, events()

    async def kill(self, sandbox_id: str, pid: int, signal: int) -> None:
        if not 1 <= signal <= 64:
            raise InvalidRequest("signal must be between 1 and 64", field="signal")
        await self.sandboxes.agent(sandbox_id).signal(pid, signal)

    async def list(self, sandbox_id: str) -> list[dict[str, Any]]:
        """Running processes started through the API, and background processes that exited
        within their retention time (the agent describes those fully)."""
        return [
            p if "command" in p else {"pid": p["pid"], "command": p["argv"][0], "args": p["argv"][1:], "pty": p["pty"]}
            for p in await self.sandboxes.agent(sandbox_id).processes()
        ]


def timeout_error(timeout: float | None, out: EncodedOutput, err: EncodedOutput) -> ProcessTimeout:
    return ProcessTimeout(
        f"command timed out after {timeout} s and was killed",
        timeout=timeout,
        stdout=out.tail(),
        stderr=err.tail(),
    )


def decode(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")
