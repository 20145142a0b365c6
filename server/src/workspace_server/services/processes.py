"""Running commands in a sandbox: to completion, or as a stream of events."""

from __future__ import annotations

import asyncio
import codecs
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from workspace_server.agent import wire
from workspace_server.agent_link.connection import AgentDisconnected, AgentStream
from workspace_server.domain.errors import (
    AgentNotConnected,
    InvalidRequest,
    ProcessTimeout,
    ResourceExhausted,
    WorkspaceError,
)
from workspace_server.domain.models import Sandbox
from workspace_server.domain.paths import sandbox_path
from workspace_server.services.sandboxes import SandboxService

HOST_TIMEOUT_MARGIN = 5.0  # the agent enforces timeouts; this only guards a wedged agent
# How long a command may take to start: its exec may wait for memory in a sandbox whose
# processes use all of memory_mb, so at least as long as the command's own timeout.
START_TIMEOUT = 30.0
TIMEOUT_OUTPUT_TAIL = 64 * 1024
COALESCE_BYTES = 1024 * 1024
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


@dataclass
class CommandResult:
    exit_code: int
    stdout: str
    stderr: str
    pid: int


@dataclass
class ProcessEvent:
    type: str  # start | stdout | stderr | exit | error
    data: dict[str, Any]


def base_environment(user: str | None, sandbox: Sandbox, pty: bool) -> dict[str, str]:
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
    env.update(sandbox.env)
    return env


def spawn_request(sandbox: Sandbox, command: RunCommand, *, pty: dict[str, int] | None = None) -> dict[str, Any]:
    if not command.command:
        raise InvalidRequest("command must not be empty", field="command")
    if "\x00" in command.command or any("\x00" in a for a in command.args):
        raise InvalidRequest("command and args must not contain NUL bytes", field="command")
    if command.user not in (None, "user", "root"):
        raise InvalidRequest("user must be 'user' or 'root'", field="user")
    if command.timeout is not None and command.timeout <= 0:
        raise InvalidRequest("timeout must be a positive number of seconds", field="timeout")
    env = base_environment(command.user, sandbox, pty is not None)
    env.update(command.env)
    if any("\x00" in k or "=" in k or not k or "\x00" in v for k, v in env.items()):
        raise InvalidRequest("env names must be non-empty without '=' or NUL; values without NUL", field="env")
    return {
        "op": "spawn",
        "argv": [command.command, *command.args],
        "env": env,
        "cwd": sandbox_path(command.cwd, field="cwd") if command.cwd else "/workspace",
        "user": command.user or "user",
        "timeout": command.timeout,
        "stdin": command.stdin is not None or pty is not None,
        "pty": pty,
    }


class ProcessService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self.sandboxes = sandboxes

    async def _spawn(
        self, sandbox_id: str, command: RunCommand, pty: dict[str, int] | None = None
    ) -> tuple[AgentStream, int]:
        """Start the command; returns its stream once the agent reports the pid."""
        sandbox = self.sandboxes.record(sandbox_id)
        request = spawn_request(sandbox, command, pty=pty)
        connection = self.sandboxes.connection(sandbox_id)
        try:
            stream = await connection.open(request)
        except AgentDisconnected:
            raise AgentNotConnected(sandbox_id) from None
        try:
            async with asyncio.timeout(max(START_TIMEOUT, command.timeout or 0)):
                started = await stream.recv_message()
            if command.stdin is not None:
                await stream.send_data(command.stdin.encode())
                await stream.send_message({"type": "eof"})
        except AgentDisconnected:
            stream.close()
            raise AgentNotConnected(sandbox_id) from None
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
        return stream, int(started["pid"])

    async def run(self, sandbox_id: str, command: RunCommand, max_output: int) -> CommandResult:
        began = time.perf_counter()
        stream, pid = await self._spawn(sandbox_id, command)
        out, err = bytearray(), bytearray()
        try:
            deadline = None if command.timeout is None else command.timeout + HOST_TIMEOUT_MARGIN
            async with asyncio.timeout(deadline):
                while True:
                    kind, payload = await stream.recv()
                    if kind == wire.OUT:
                        out += payload[: max(0, max_output - len(out))]
                    elif kind == wire.ERR:
                        err += payload[: max(0, max_output - len(err))]
                    elif kind == wire.MSG and payload.get("type") == "error":
                        raise agent_failure(payload)
                    elif kind == wire.MSG and payload.get("type") == "exit":
                        if payload.get("timed_out"):
                            raise timeout_error(command.timeout, out, err)
                        self.sandboxes.metrics.exec_seconds.observe(time.perf_counter() - began)
                        return CommandResult(int(payload["code"]), decode(out), decode(err), pid)
                    elif kind == wire.CLOSE:
                        raise AgentNotConnected(sandbox_id, "the agent ended the command without an exit status")
        except TimeoutError:
            raise timeout_error(command.timeout, out, err) from None
        except AgentDisconnected:
            raise AgentNotConnected(sandbox_id, "the sandbox agent disconnected while the command ran") from None
        finally:
            stream.close()

    async def stream(
        self, sandbox_id: str, command: RunCommand, keepalive: float
    ) -> tuple[int, AsyncIterator[ProcessEvent | None]]:
        """Start the command (errors raise here, before any event), then yield its events.

        None is a keepalive tick. Closing the iterator early kills the command."""
        stream, pid = await self._spawn(sandbox_id, command)

        async def events() -> AsyncIterator[ProcessEvent | None]:
            decoders = {wire.OUT: Utf8Stream(), wire.ERR: Utf8Stream()}
            names = {wire.OUT: "stdout", wire.ERR: "stderr"}
            pending: tuple[int, Any] | None = None
            try:
                yield ProcessEvent("start", {"pid": pid})
                while True:
                    if pending is not None:
                        (kind, payload), pending = pending, None
                    elif (ready := stream.recv_nowait()) is not None:
                        kind, payload = ready
                        # Output may flow without this task ever suspending, and a client that
                        # left is only noticed by cancelling us: give the loop that chance.
                        await asyncio.sleep(0)
                    else:
                        try:
                            # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a
                            # cancellation that races a completed recv().
                            async with asyncio.timeout(keepalive):
                                kind, payload = await stream.recv()
                        except TimeoutError:
                            yield None
                            continue
                    if kind in decoders:
                        # Output already queued goes out as one event: fewer, larger events.
                        pieces, size = [payload], len(payload)
                        while size < COALESCE_BYTES and (more := stream.recv_nowait()) is not None:
                            if more[0] != kind:
                                pending = more
                                break
                            pieces.append(more[1])
                            size += len(more[1])
                        text = decoders[kind].feed(b"".join(pieces))  # one piece: returned as is, no copy
                        if text:
                            yield ProcessEvent(names[kind], {"data": text})
                    elif kind == wire.MSG and payload.get("type") == "exit":
                        for k, decoder in decoders.items():
                            tail = decoder.flush()
                            if tail:
                                yield ProcessEvent(names[k], {"data": tail})
                        if payload.get("timed_out"):
                            yield ProcessEvent(
                                "error",
                                {
                                    "code": "PROCESS_TIMEOUT",
                                    "message": f"command timed out after {command.timeout} s and was killed",
                                },
                            )
                        else:
                            yield ProcessEvent("exit", {"code": int(payload["code"])})
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
                        "message": f"sandbox {sandbox_id}: the sandbox agent disconnected while the command ran",
                    },
                )
            finally:
                stream.close()

        return pid, events()

    async def kill(self, sandbox_id: str, pid: int, signal: int) -> None:
        if not 1 <= signal <= 64:
            raise InvalidRequest("signal must be between 1 and 64", field="signal")
        await self._request(sandbox_id, {"op": "signal", "pid": pid, "signal": signal})

    async def list(self, sandbox_id: str) -> list[dict[str, Any]]:
        answer = await self._request(sandbox_id, {"op": "processes"})
        return [
            {"pid": p["pid"], "command": p["argv"][0], "args": p["argv"][1:], "pty": p["pty"]}
            for p in answer["processes"]
        ]

    async def _request(self, sandbox_id: str, request: dict[str, Any]) -> dict[str, Any]:
        connection = self.sandboxes.connection(sandbox_id)
        try:
            return await connection.request(request)
        except AgentDisconnected:
            raise AgentNotConnected(sandbox_id) from None


def agent_failure(message: dict[str, Any]) -> WorkspaceError:
    return WorkspaceError(
        str(message.get("message", "agent error")),
        code=str(message.get("code", "INTERNAL")),
        **dict(message.get("details") or {}),
    )


def timeout_error(timeout: float | None, out: bytearray, err: bytearray) -> ProcessTimeout:
    return ProcessTimeout(
        f"command timed out after {timeout} s and was killed",
        timeout=timeout,
        stdout=decode(out[-TIMEOUT_OUTPUT_TAIL:]),
        stderr=decode(err[-TIMEOUT_OUTPUT_TAIL:]),
    )


def decode(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", errors="replace")


class Utf8Stream:
    """Decodes a byte stream without splitting a character across events."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return str(self._decoder.decode(data))

    def flush(self) -> str:
        return str(self._decoder.decode(b"", final=True))
