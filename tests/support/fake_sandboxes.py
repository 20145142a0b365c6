"""A fake runtime and a fake agent, for unit tests of the services without root.

`FakeAgent` is an in-process asyncio server on a Unix socket that speaks the real agent
protocol (wire framing, agent/ops.py messages), so the services, the SandboxAgent client
and the agent link run for real and only the sandbox is pretend. Commands are scripted:
`agent.scripts["name"]` returns the frames a command sends (stdout/stderr chunks, each
written at once so the host sees them queued together) and its exit code.

`FakeRuntime` implements the Runtime protocol (runtimes/base.py): `start` starts a
FakeAgent, `stop` stops it and keeps the disk (a name in `disks`), `destroy` removes both.
Sandboxes outlive a SandboxService (as runc's outlive the server), so a second service on
the same runtime and store can test restart recovery.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workspace_server.agent import ops, wire
from workspace_server.domain.errors import ResourceExhausted, RuntimeFailure
from workspace_server.domain.models import ResourceLimits
from workspace_server.runtimes.base import SandboxSpec, StartedSandbox, WorkloadSample


@dataclass
class Script:
    """What a command does: its output chunks (("stdout"|"stderr", bytes)), then its exit."""

    output: list[tuple[str, bytes]] = field(default_factory=list)
    exit_code: int = 0
    hang: bool = False  # never exits (until killed or the stream is closed)
    error: tuple[str, str] | None = None  # (code, message): the agent refuses to start it


def echo_script(request: dict[str, Any]) -> Script:
    """The default: `echo ARGS` (prints its arguments), anything else prints nothing."""
    argv = request["argv"]
    if argv[0] == "echo":
        return Script([("stdout", (" ".join(argv[1:]) + "\n").encode())])
    return Script()


class FakeAgent:
    """A pretend sandbox agent listening on `socket_path`."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self.script: Callable[[dict[str, Any]], Script] = echo_script
        self.requests: list[dict[str, Any]] = []  # every operation opened, in order
        self.killed: list[str] = []  # how each hanging command ended: "closed" or "kill"
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pids = itertools.count(100)

    async def start(self) -> None:
        self._server = await asyncio.start_unix_server(self._serve, str(self.socket_path))

    @property
    def running(self) -> bool:
        return self._server is not None

    async def stop(self) -> None:
        """The sandbox dies: the listener and every link close."""
        if self._server is not None:
            self._server.close()
            self._server = None
        self.drop_links()

    def drop_links(self) -> None:
        """Cut the host's links (as an agent crash would), but keep listening."""
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        inboxes: dict[int, asyncio.Queue[tuple[int, Any]]] = {}
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                header = await reader.readexactly(wire.HEADER.size)
                length, stream_id, kind = wire.decode_header(header)
                payload = await reader.readexactly(length) if length else b""
                if kind == wire.OPEN:
                    request = wire.decode_json(payload)
                    self.requests.append(request)
                    inbox: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
                    inboxes[stream_id] = inbox
                    task = asyncio.create_task(self._operation(writer, stream_id, request, inbox))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif stream_id in inboxes:
                    value = wire.decode_json(payload) if kind == wire.MSG else payload
                    inboxes[stream_id].put_nowait((kind, value))
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            pass  # the fake sandbox is going away (asyncio would log a cancelled handler)
        finally:
            for task in tasks:
                task.cancel()
            self._writers.discard(writer)
            writer.close()

    async def _operation(
        self, writer: asyncio.StreamWriter, stream_id: int, request: dict[str, Any], inbox: asyncio.Queue[Any]
    ) -> None:
        def finish(message: dict[str, Any]) -> None:
            writer.write(wire.encode_json(stream_id, wire.MSG, message) + wire.encode(stream_id, wire.CLOSE))

        op = request.get("op")
        if op == ops.HELLO:
            finish(ops.ok(version=wire.PROTOCOL_VERSION, pid=1))
        elif op == ops.SPAWN:
            await self._spawn(writer, stream_id, request, inbox, finish)
        elif op in (ops.SHUTDOWN, ops.SIGNAL):
            finish(ops.ok())
        elif op == ops.PROCESSES:
            finish(ops.ok(processes=[]))
        else:
            finish(ops.error("INVALID_REQUEST", f"unknown operation {op!r}"))

    async def _spawn(
        self,
        writer: asyncio.StreamWriter,
        stream_id: int,
        request: dict[str, Any],
        inbox: asyncio.Queue[Any],
        finish: Callable[[dict[str, Any]], None],
    ) -> None:
        script = self.script(request)
        if script.error is not None:
            finish(ops.error(*script.error, {"command": request["argv"][0]}))
            return
        writer.write(wire.encode_json(stream_id, wire.MSG, ops.started(next(self._pids))))
        kinds = {"stdout": wire.OUT, "stderr": wire.ERR}
        # One write for all output and the exit: the host finds it all queued at once.
        frames = b"".join(wire.encode(stream_id, kinds[name], data) for name, data in script.output)
        if script.hang:
            writer.write(frames)
            while True:
                kind, value = await inbox.get()
                if kind == wire.CLOSE:  # the host went away: the command goes with it
                    self.killed.append("closed")
                    return
                if kind == wire.MSG and value.get("type") == ops.KILL:
                    self.killed.append("kill")
                    finish(ops.exited(137, False))
                    return
        writer.write(frames + wire.encode_json(stream_id, wire.MSG, ops.exited(script.exit_code, False)))
        writer.write(wire.encode(stream_id, wire.CLOSE))


class FakeRuntime:
    """The Runtime protocol, with FakeAgents for sandboxes."""

    name = "fake"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.agents: dict[str, FakeAgent] = {}
        self.disks: set[str] = set()
        self.frozen_ids: set[str] = set()
        self.started: list[str] = []
        self.destroyed: list[str] = []
        self.limits_applied: list[tuple[str, ResourceLimits]] = []
        self.networks_attached: list[str] = []
        self.fail_network_attach = False
        self.fail_starts = False
        self.disk_room_mb: int | None = None  # what all disks may add up to (None: no bound)
        self.disk_sizes: dict[str, int] = {}

    async def start(self, spec: SandboxSpec) -> StartedSandbox:
        if self.fail_starts:
            raise RuntimeFailure("the fake runtime was told to fail")
        if not spec.existing_disk and self.disk_room_mb is not None:
            free = self.disk_room_mb - sum(self.disk_sizes.values())
            if spec.limits.disk_mb > free:
                raise ResourceExhausted("no room for the disk", needed_mb=spec.limits.disk_mb, free_mb=free)
            self.disk_sizes[spec.sandbox_id] = spec.limits.disk_mb
        if spec.existing_disk and spec.sandbox_id not in self.disks:
            raise RuntimeFailure("the sandbox's disk is missing")
        agent = FakeAgent(self.directory / f"{spec.sandbox_id}.sock")
        await agent.start()
        self.agents[spec.sandbox_id] = agent
        self.disks.add(spec.sandbox_id)
        self.started.append(spec.sandbox_id)
        return StartedSandbox(spec.sandbox_id, agent.socket_path, 4242)

    async def destroy(self, sandbox_id: str) -> None:
        self.destroyed.append(sandbox_id)
        await self.stop(sandbox_id)
        self.disks.discard(sandbox_id)
        self.disk_sizes.pop(sandbox_id, None)

    async def stop(self, sandbox_id: str) -> None:
        agent = self.agents.pop(sandbox_id, None)
        self.frozen_ids.discard(sandbox_id)
        if agent is not None:
            await agent.stop()
            with contextlib.suppress(FileNotFoundError):
                agent.socket_path.unlink()

    async def running(self, sandbox_id: str) -> StartedSandbox | None:
        agent = self.agents.get(sandbox_id)
        if agent is None or not agent.running:
            return None
        return StartedSandbox(sandbox_id, agent.socket_path, 4242)

    async def list_ids(self) -> list[str]:
        return sorted(set(self.agents) | self.disks)

    @property
    def adjustable_limits(self) -> bool:
        return True

    async def apply_limits(self, sandbox_id: str, current: ResourceLimits, wanted: ResourceLimits) -> None:
        self.limits_applied.append((sandbox_id, wanted))

    @property
    def attachable_network(self) -> bool:
        return True

    async def attach_network(self, sandbox_id: str, host_pid: int) -> None:
        if self.fail_network_attach:
            raise RuntimeFailure("no network today")
        self.networks_attached.append(sandbox_id)

    def oom_kills(self, sandbox_id: str) -> int:
        return 0

    async def freeze(self, sandbox_id: str) -> None:
        self.frozen_ids.add(sandbox_id)

    async def thaw(self, sandbox_id: str) -> None:
        self.frozen_ids.discard(sandbox_id)

    def frozen(self, sandbox_id: str) -> bool:
        return sandbox_id in self.frozen_ids

    def has_disk(self, sandbox_id: str) -> bool:
        return sandbox_id in self.disks

    async def copy_disk(self, source_id: str, target_id: str) -> None:
        self.disks.add(target_id)

    def workload_sample(self, sandbox_id: str) -> WorkloadSample | None:
        return WorkloadSample(frozenset(), 0)

    def check(self) -> None:
        pass
