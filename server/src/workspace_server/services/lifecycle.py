"""Lifecycle operations on existing sandboxes: pause and resume, stop and start, fork, and
the timeouts that delete, stop or pause a sandbox (its lifetime, and its idle time).

The state machine itself (which operation from which state) is domain/lifecycle.py; each
operation here holds the sandbox's gate (services/gates.py), so operations on one sandbox
never interleave, and a pause never races a command being started.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace

from workspace_server.domain.errors import InvalidStateTransition, SandboxPaused, WorkspaceError
from workspace_server.domain.lifecycle import Operation, check
from workspace_server.domain.models import OnTimeout, Sandbox, SandboxState, new_sandbox_id
from workspace_server.runtimes.base import WorkloadSample
from workspace_server.services.create_request import CreateRequest, timeout_policy
from workspace_server.services.sandboxes import SandboxService, epoch, now_iso

log = logging.getLogger(__name__)

TIMEOUT_TICK = 0.1
CPU_SAMPLE_SECONDS = 1.0  # how often the CPU use of sandboxes with an idle timeout is looked at
STOP_GRACE = 2.0


@dataclass
class Outcome:
    sandbox: Sandbox
    changed: bool  # False: it was already in the state asked for


@dataclass
class ForkRequest:
    name: str | None = None
    env: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    timeout: int | None = None
    on_timeout: str | None = None
    idle_timeout: int | None = None
    auto_resume: bool | None = None
    cpu: float | None = None
    memory_mb: int | None = None
    pids: int | None = None
    network: bool | None = None


class LifecycleService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self.sandboxes = sandboxes
        self.runtime = sandboxes.runtime
        self._acting: set[str] = set()  # sandboxes whose timeout action is under way
        self._cpu: dict[str, WorkloadSample] = {}
        self.error_retention = sandboxes.settings.error_retention_seconds

    def start_background(self) -> None:
        self.sandboxes.background(self._timeout_loop())

    # ------------------------------------------------------------------ pause / resume
    async def pause(self, sandbox_id: str) -> Outcome:
        async with self.sandboxes.gates(sandbox_id).operation():
            record = self.sandboxes.record(sandbox_id)
            if not check(Operation.PAUSE, sandbox_id, record.state):
                return Outcome(self.sandboxes.get(sandbox_id), False)
            await self.runtime.freeze(sandbox_id)
            try:
                # The timeout counts running time: it starts again on resume.
                paused = replace(record, state=SandboxState.PAUSED, updated_at=now_iso(), expires_at=None)
                self.sandboxes.put(paused)
            except WorkspaceError:
                await self.runtime.thaw(sandbox_id)
                raise
            return Outcome(self.sandboxes.get(sandbox_id), True)

    async def resume(self, sandbox_id: str) -> Outcome:
        async with self.sandboxes.gates(sandbox_id).operation():
            record = self.sandboxes.record(sandbox_id)
            if not check(Operation.RESUME, sandbox_id, record.state):
                return Outcome(self.sandboxes.get(sandbox_id), False)
            await self.runtime.thaw(sandbox_id)
            try:
                self.sandboxes.mark_running(record)
            except WorkspaceError:
                await self.runtime.freeze(sandbox_id)
                raise
            return Outcome(self.sandboxes.get(sandbox_id), True)

    @asynccontextmanager
    async def command_start(self, sandbox_id: str) -> AsyncIterator[None]:
        """Around the start of a command or PTY: a paused sandbox is resumed first (when it
        was created with auto_resume), and no pause can begin until the command has started."""
        for _ in range(3):  # a pause may slip in between the resume and the gate: retry
            record = self.sandboxes.record(sandbox_id)
            if record.state == SandboxState.PAUSED:
                if not record.auto_resume:
                    raise SandboxPaused(sandbox_id)
                await self.resume(sandbox_id)
            async with self.sandboxes.gates(sandbox_id).command_start():
                if self.sandboxes.record(sandbox_id).state != SandboxState.PAUSED:
                    yield
                    return
        raise SandboxPaused(sandbox_id)

    # ------------------------------------------------------------------ stop / start
    async def stop(self, sandbox_id: str, force: bool = False) -> Outcome:
        async with self.sandboxes.gates(sandbox_id).operation():
            record = self.sandboxes.record(sandbox_id)
            if not check(Operation.STOP, sandbox_id, record.state):
                return Outcome(record, False)
            record = self.sandboxes.set_state(replace(record, expires_at=None), SandboxState.STOPPING)
            if not force:
                await self._terminate_gracefully(sandbox_id)
            await self.sandboxes.drop_connection(sandbox_id)
            try:
                await self.runtime.stop(sandbox_id)
            except WorkspaceError as exc:
                self.sandboxes.set_state(record, SandboxState.ERROR, f"stopping failed: {exc.message}")
                raise
            self._cpu.pop(sandbox_id, None)
            return Outcome(self.sandboxes.set_state(record, SandboxState.STOPPED), True)

    async def _terminate_gracefully(self, sandbox_id: str) -> None:
        """SIGTERM to every process group and a short grace, so programs can save their work."""
        try:
            agent = self.sandboxes.agent(sandbox_id)
            await self.runtime.thaw(sandbox_id)  # a frozen process cannot take its SIGTERM
            await asyncio.wait_for(agent.shutdown(STOP_GRACE), STOP_GRACE + 1)
        except (WorkspaceError, TimeoutError, OSError) as exc:  # the kill that follows is enough
            log.info("sandbox %s: graceful stop cut short: %r", sandbox_id, exc)

    async def start(self, sandbox_id: str) -> Outcome:
        async with self.sandboxes.gates(sandbox_id).operation():
            record = self.sandboxes.record(sandbox_id)
            if not check(Operation.START, sandbox_id, record.state):
                return Outcome(self.sandboxes.get(sandbox_id), False)
            self.sandboxes.check_capacity()
            # started_at set: a crash during this start keeps the files (services/recovery.py).
            record = replace(record, started_at=record.started_at or record.created_at)
            record = self.sandboxes.set_state(record, SandboxState.STARTING)
            try:
                record = await self.sandboxes.boot(record, existing_disk=True)
                record = self.sandboxes.mark_running(record)
            except BaseException as exc:
                reason = exc.message if isinstance(exc, WorkspaceError) else type(exc).__name__
                self.sandboxes.set_state(record, SandboxState.STOPPED, f"the last start failed: {reason}")
                raise
            return Outcome(self.sandboxes.get(sandbox_id), True)

    # ------------------------------------------------------------------ fork
    async def fork(self, source_id: str, request: ForkRequest) -> Sandbox:
        """A new sandbox with a copy of the source's files (taken while its processes are
        frozen) and its settings unless `request` overrides them. Processes are not copied."""
        sandboxes = self.sandboxes
        source = sandboxes.record(source_id)
        check(Operation.FORK, source_id, source.state)
        sandboxes.check_capacity()
        limits = sandboxes.limits(
            cpu=request.cpu if request.cpu is not None else source.limits.cpu,
            memory_mb=request.memory_mb if request.memory_mb is not None else source.limits.memory_mb,
            pids=request.pids if request.pids is not None else source.limits.pids,
            disk_mb=source.limits.disk_mb,
        )
        on_timeout, idle_timeout = timeout_policy(
            CreateRequest(
                on_timeout=request.on_timeout or source.on_timeout.value,
                idle_timeout=request.idle_timeout if request.idle_timeout is not None else source.idle_timeout,
            )
        )
        stamp = now_iso()
        fork = Sandbox(
            id=new_sandbox_id(),
            template=source.template,
            state=SandboxState.STARTING,
            created_at=stamp,
            updated_at=stamp,
            limits=limits,
            network=source.network if request.network is None else request.network,
            name=request.name if request.name is not None else source.name,
            env=dict(request.env if request.env is not None else source.env),
            metadata=dict(request.metadata if request.metadata is not None else source.metadata),
            timeout=request.timeout if request.timeout is not None else source.timeout,
            on_timeout=on_timeout,
            idle_timeout=idle_timeout,
            auto_resume=source.auto_resume if request.auto_resume is None else request.auto_resume,
        )
        sandboxes.put(fork)
        try:
            async with sandboxes.gates(source_id).operation():
                source = sandboxes.record(source_id)
                check(Operation.FORK, source_id, source.state)
                freeze = source.state == SandboxState.RUNNING
                if freeze:
                    await self.runtime.freeze(source_id)
                try:
                    await self.runtime.copy_disk(source_id, fork.id)
                finally:
                    if freeze:
                        await self.runtime.thaw(source_id)
            fork = await sandboxes.boot(fork, existing_disk=True)
            return sandboxes.mark_running(fork)
        except BaseException:
            await asyncio.shield(sandboxes.remove(fork, force=True))
            raise

    # ------------------------------------------------------------------ timeouts
    async def set_timeout(
        self, sandbox_id: str, timeout: int, on_timeout: str | None = None, idle_timeout: int | None = None
    ) -> Sandbox:
        """The sandbox now times out `timeout` seconds from now (from its next start or
        resume if it is not running). idle_timeout 0 turns the idle timeout off."""
        async with self.sandboxes.gates(sandbox_id).operation():
            record = self.sandboxes.record(sandbox_id)
            if record.state in (SandboxState.DELETING, SandboxState.ERROR):
                raise InvalidStateTransition(sandbox_id, "set the timeout of", record.state.value, "delete it")
            policy, idle = timeout_policy(
                CreateRequest(on_timeout=on_timeout or record.on_timeout.value, idle_timeout=idle_timeout or None)
            )
            running = record.state == SandboxState.RUNNING
            record = replace(
                record,
                timeout=timeout,
                expires_at=time.time() + timeout if running else None,
                on_timeout=policy,
                idle_timeout=record.idle_timeout if idle_timeout is None else idle,
                updated_at=now_iso(),
            )
            self.sandboxes.put(record)
            self.sandboxes.activity.touch(sandbox_id)
            return self.sandboxes.get(sandbox_id)

    async def _timeout_loop(self) -> None:
        next_sample = 0.0
        while True:
            await asyncio.sleep(TIMEOUT_TICK)
            now, sample = time.time(), time.monotonic() >= next_sample
            if sample:
                next_sample = time.monotonic() + CPU_SAMPLE_SECONDS
            for record in self.sandboxes.records():
                if record.id in self._acting or self.sandboxes.deleting(record.id):
                    continue
                expired = record.expires_at is not None and record.expires_at <= now
                if record.state == SandboxState.ERROR and expired:
                    self._act(record, "its timeout expired")
                elif record.state == SandboxState.ERROR and now - epoch(record.updated_at) > self.error_retention:
                    self._act(record, f"it has been in error for {self.error_retention:g} s (its retention)")
                if record.state != SandboxState.RUNNING:
                    continue
                if expired:
                    self._act(record, "its timeout expired")
                elif record.idle_timeout:
                    if sample:
                        self._sample_cpu(record.id)
                    if self.sandboxes.activity.idle_seconds(record.id) >= record.idle_timeout:
                        self._act(record, f"it was idle for {record.idle_timeout} s")

    def _sample_cpu(self, sandbox_id: str) -> None:
        """CPU used by the sandbox's own processes (or a process started or ended) since the
        last sample is activity."""
        current = self.runtime.workload_sample(sandbox_id)
        if current is None:
            return
        previous = self._cpu.get(sandbox_id)
        self._cpu[sandbox_id] = current
        if previous is not None and (current.pids != previous.pids or current.cpu_ticks != previous.cpu_ticks):
            self.sandboxes.activity.touch(sandbox_id)

    def _act(self, record: Sandbox, why: str) -> None:
        self._acting.add(record.id)
        self.sandboxes.background(self._on_timeout(record, why), record.id)

    async def _on_timeout(self, record: Sandbox, why: str) -> None:
        action = OnTimeout.DELETE if record.state == SandboxState.ERROR else record.on_timeout
        log.info(
            "sandbox %s: %s; %s",
            record.id,
            why,
            {"delete": "deleting", "stop": "stopping", "pause": "pausing"}[action.value],
        )
        try:
            if action == OnTimeout.DELETE:
                await self.sandboxes.delete(record.id, force=True)
            elif action == OnTimeout.STOP:
                await self.stop(record.id)
            else:
                await self.pause(record.id)
        except WorkspaceError as exc:
            log.warning("sandbox %s: the timeout's %s failed: %s", record.id, action.value, exc.message)
        finally:
            self._acting.discard(record.id)
            self._cpu.pop(record.id, None)
