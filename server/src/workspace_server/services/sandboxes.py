"""Sandbox lifecycle: create (from the warm pool when it can), get, list, delete, expiry;
what a server restart does to sandboxes that were running is in services/recovery.py."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from workspace_server.agent_link.address import AgentAddress
from workspace_server.agent_link.client import SandboxAgent
from workspace_server.config import Settings
from workspace_server.domain.errors import (
    AgentNotConnected,
    InvalidRequest,
    ResourceExhausted,
    RuntimeFailure,
    SandboxNotFound,
    SandboxNotRunning,
    ShuttingDown,
    WorkspaceError,
)
from workspace_server.domain.models import (
    ImageConfig,
    ResourceLimits,
    Sandbox,
    SandboxState,
    Template,
    new_sandbox_id,
)
from workspace_server.domain.templates import TemplateRegistry
from workspace_server.logs import request_id_var, sandbox_id_var
from workspace_server.metrics import Metrics
from workspace_server.nfs.base import WorkspaceExports
from workspace_server.runtimes.base import ClusterRuntime, Runtime, SandboxSpec
from workspace_server.services.activity import Activity
from workspace_server.services.create_request import CreateRequest, timeout_policy
from workspace_server.services.gates import Gates
from workspace_server.services.pool import WarmPool
from workspace_server.services.recovery import recover
from workspace_server.services.tasks import BackgroundTasks
from workspace_server.store.disk_space import DataDirSpace
from workspace_server.store.sqlite import SandboxStore

log = logging.getLogger(__name__)

EXPIRY_TICK = 0.1
RECLAIM_INTERVAL = 1.0
SHUTDOWN_GRACE = 2.0  # how long a graceful delete lets commands exit after SIGTERM
AGENT_LOST = "the sandbox agent disconnected: the sandbox's init exited or was killed"
# States that hold memory (and count towards max_sandboxes).
LIVE_STATES = (SandboxState.STARTING, SandboxState.RUNNING, SandboxState.PAUSED)
# What max_sandboxes counts: every state whose sandbox still holds processes or is being torn down.
HOLDING_STATES = (*LIVE_STATES, SandboxState.STOPPING, SandboxState.DELETING)
# States whose agent link is up: file operations and the process list work in both.
CONNECTED_STATES = (SandboxState.RUNNING, SandboxState.PAUSED)
RELINK_LIMIT = 3  # links re-established per sandbox within RELINK_WINDOW
RELINK_WINDOW = 60.0
RELINK_TIMEOUT = 2.0


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class SandboxService:
    """The sandboxes' records and agent links, and the lifecycle steps every other service
    builds on: create (from the warm pool when it can), delete, boot, restart recovery.

    Records live in the store (they outlive the server) and, for speed, in `_records`; a
    record is stored before it is changed in memory, so nothing claims a state the store
    does not have. Other services reach a sandbox's agent through `agent()`."""

    def __init__(
        self,
        settings: Settings,
        store: SandboxStore,
        runtime: Runtime,
        templates: TemplateRegistry,
        metrics: Metrics,
        exports: WorkspaceExports | None = None,
        space: DataDirSpace | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.runtime = runtime
        self.templates = templates
        self.metrics = metrics
        self.exports = exports  # NFS: running sandboxes' /workspace, when the server serves it
        self.space = space  # the data dir's ballast, kept (or given up when the disk is full) in the background
        self._agents: dict[str, SandboxAgent] = {}
        self._records: dict[str, Sandbox] = {}
        self._deleting: dict[str, asyncio.Event] = {}  # each is set once its sandbox is gone
        # Sandboxes whose teardown failed (out of open files, a host tool failing): retried
        # from the background loop until it works, so none is ever left running untracked.
        # The value says whether its record goes once it is reclaimed.
        self._unreclaimed: dict[str, bool] = {}
        self._claims_in_flight = 0
        self._tasks = BackgroundTasks()
        self.pool = WarmPool(settings, runtime, templates, metrics, self._tasks, self._destroy)
        self._closing = False
        self._on_sandbox_gone: list[Callable[[str], None]] = []
        self.gates = Gates()
        self.activity = Activity()
        self._relinked: dict[str, list[float]] = {}  # when each sandbox's link was re-established

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        if isinstance(self.runtime, ClusterRuntime):
            self.runtime.attach(self)
        if self.space is not None:
            self.space.keep_reserve()
        await recover(self)
        self._tasks.spawn(self._reclaim_loop())
        self.pool.start()

    async def shutdown(self) -> None:
        """Stop background work and drop warm sandboxes; user sandboxes keep running and
        are re-adopted by the next server on this data dir."""
        self._closing = True
        self.pool.stop_refilling()
        await self._tasks.cancel_all()
        await self.pool.close()
        for agent in list(self._agents.values()):
            await agent.close()
        self._agents.clear()
        if isinstance(self.runtime, ClusterRuntime):
            await self.runtime.close()

    def background(self, coroutine: Coroutine[Any, Any, None], sandbox_id: str = "-") -> None:
        """Run `coroutine` as a background task, cancelled at shutdown."""
        self._tasks.spawn(coroutine, sandbox_id)

    def on_sandbox_gone(self, callback: Callable[[str], None]) -> None:
        """`callback(sandbox_id)` runs when a sandbox's agent link is closed for good or for a stop."""
        self._on_sandbox_gone.append(callback)

    # ------------------------------------------------------------------ queries
    def get(self, sandbox_id: str) -> Sandbox:
        """The record as callers see it, with live figures from the runtime."""
        record = self.record(sandbox_id)
        if record.state in CONNECTED_STATES:
            record = replace(record, oom_kills=self.runtime.oom_kills(sandbox_id))
        return self._with_nfs_url(record)

    def record(self, sandbox_id: str) -> Sandbox:
        """The stored record only: cheap, for the request path of other services."""
        record = self._records.get(sandbox_id) or self.store.get(sandbox_id)
        if record is None:
            raise SandboxNotFound(sandbox_id)
        return record

    def list(self, state: SandboxState | None = None) -> list[Sandbox]:
        return [self._with_nfs_url(record) for record in self.store.list(state)]

    def _with_nfs_url(self, record: Sandbox) -> Sandbox:
        if self.exports is None or record.state not in CONNECTED_STATES:
            return record
        return replace(record, nfs_url=self.exports.url(record.id))

    async def _export(self, sandbox_id: str) -> None:
        """Serve a running sandbox's /workspace over NFS (a failure is logged, never fatal:
        the sandbox works without it and its nfs_url stays null)."""
        if self.exports is not None:
            try:
                await self.exports.export(sandbox_id)
            except Exception:
                log.exception("nfs: could not export sandbox %s", sandbox_id)

    async def _withdraw(self, sandbox_id: str) -> None:
        """Stop serving its /workspace: before its processes stop or its disk is unmounted
        (ganesha holds files of it open)."""
        if self.exports is not None:
            try:
                await self.exports.withdraw(sandbox_id)
            except Exception:
                log.exception("nfs: could not withdraw the export of %s", sandbox_id)

    def image_config(self, record: Sandbox) -> ImageConfig | None:
        """The image config of the sandbox's template (None for the built-in ones)."""
        try:
            template = self.templates.get(record.template)
        except WorkspaceError:
            return None
        return template.config if template.is_image else None

    def users_of(self, template: str) -> builtins.list[str]:
        """Sandboxes made from `template` that may run again (paused and stopped ones too: they
        boot on its layers). Warm ones are not users: they can be discarded."""
        gone = (SandboxState.DELETING, SandboxState.ERROR)
        return sorted(r.id for r in self._records.values() if r.template == template and r.state not in gone)

    def agent(self, sandbox_id: str) -> SandboxAgent:
        """The agent of a running sandbox, or the error that says why there is none."""
        agent = self._agents.get(sandbox_id)
        if agent is not None and agent.alive:
            self.activity.touch(sandbox_id)
            return agent
        record = self.record(sandbox_id)
        if record.state == SandboxState.ERROR:
            raise AgentNotConnected(sandbox_id, record.error_message or "the sandbox agent is not connected")
        if record.state not in CONNECTED_STATES:
            raise SandboxNotRunning(sandbox_id, record.state.value)
        raise AgentNotConnected(sandbox_id)

    # ------------------------------------------------------------------ create
    def limits(
        self,
        *,
        cpu: float | None = None,
        memory_mb: int | None = None,
        pids: int | None = None,
        disk_mb: int | None = None,
    ) -> ResourceLimits:
        """The limits asked for, the server's defaults for the rest, within its maximums."""
        default, maximum = self.settings.default_limits, self.settings.max_limits
        return ResourceLimits.requested(default, maximum, cpu=cpu, memory_mb=memory_mb, pids=pids, disk_mb=disk_mb)

    def holding(self) -> int:
        """Sandboxes holding host resources beyond their disk: live ones, those being stopped
        or deleted, pool claims still getting their limits, and teardowns being retried."""
        counted = sum(1 for r in self._records.values() if r.state in HOLDING_STATES)
        retried = sum(1 for i in self._unreclaimed if i not in self._records)
        return counted + retried + self._claims_in_flight

    def check_capacity(self) -> None:
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        live = self.holding()
        if live >= self.settings.max_sandboxes:
            raise ResourceExhausted(f"the server already runs {live} sandboxes (max_sandboxes)")

    async def create(self, request: CreateRequest, *, image: Template | None = None) -> Sandbox:
        """`image`: boot on these layers and config instead of the named template's (a build
        step's intermediate image, recorded under its base template's name); never pooled."""
        if self._closing:
            raise ShuttingDown("the server is shutting down")
        template = image if image is not None else self.templates.get(request.template)
        limits = self.limits(cpu=request.cpu, memory_mb=request.memory_mb, pids=request.pids, disk_mb=request.disk_mb)
        network = bool(request.network)
        if request.timeout is not None and request.timeout <= 0:
            raise InvalidRequest("timeout must be a positive number of seconds", field="timeout")
        on_timeout, idle_timeout = timeout_policy(request)
        self.check_capacity()
        started = time.perf_counter()
        timeout = request.timeout if request.timeout is not None else self.settings.default_timeout
        stamp = now_iso()
        record = Sandbox(
            id="",
            template=template.name,
            state=SandboxState.STARTING,
            created_at=stamp,
            updated_at=stamp,
            limits=limits,
            network=network,
            name=request.name,
            env=dict(request.env or {}),
            metadata=dict(request.metadata or {}),
            timeout=timeout,
            on_timeout=on_timeout,
            idle_timeout=idle_timeout,
            auto_resume=request.auto_resume if request.auto_resume is not None else True,
        )
        warm = None
        if image is None and self.pool.serves(limits, network):
            self._claims_in_flight += 1  # counted while a claim's limits are rewritten (no record yet)
            try:
                warm = await self.pool.claim(template.name, limits, network)
            finally:
                self._claims_in_flight -= 1
        if warm is not None:
            record = replace(record, id=warm.sandbox_id, host_pid=warm.host_pid)
            self._adopt(record, warm.agent)
        else:
            try:
                record = await self._start_cold(replace(record, id=new_sandbox_id()), template)
            except ResourceExhausted as exc:  # no room for its disk: warm sandboxes go first
                if "needed_mb" not in exc.details or not await self.pool.shed(exc.details["needed_mb"]):
                    raise
                record = await self._start_cold(replace(record, id=new_sandbox_id()), template)
        try:
            record = self._mark_running(record)
        except WorkspaceError:  # the state could not be stored: nobody may be left holding it
            self._records.pop(record.id, None)
            agent = self._agents.pop(record.id, None)
            if agent is not None:
                await agent.close()
            with contextlib.suppress(WorkspaceError):
                self.store.delete(record.id)
            await self._destroy(record.id)
            raise
        await self._export(record.id)
        self.metrics.create_seconds.labels(source="pool" if warm else "cold").observe(time.perf_counter() - started)
        return self._with_nfs_url(record)

    async def _start_cold(self, record: Sandbox, template: Template) -> Sandbox:
        self.store.put(record)
        self._records[record.id] = record
        spec = SandboxSpec(record.id, template, record.limits, record.network)
        try:
            started = await self.runtime.start(spec)
            agent = await self._connect(record.id, started.agent_address, self.settings.agent_connect_timeout)
        except BaseException as exc:
            if await self._destroy(record.id):
                self._records.pop(record.id, None)
                with contextlib.suppress(WorkspaceError):
                    self.store.delete(record.id)
            else:  # still holds host resources: stays listed (error) until reclaimed
                with contextlib.suppress(WorkspaceError):
                    self._set_state(record, SandboxState.ERROR, f"the sandbox failed to start: {exc!r}")
            if isinstance(exc, AgentNotConnected):
                raise RuntimeFailure(f"sandbox {record.id} started but its agent never answered") from exc
            raise
        record = replace(record, host_pid=started.host_pid)
        self._agents[record.id] = agent
        return record

    async def _connect(self, sandbox_id: str, address: AgentAddress, timeout: float) -> SandboxAgent:
        return await SandboxAgent.connect(sandbox_id, address, timeout, self._disconnect_handler(sandbox_id))

    def _adopt(self, record: Sandbox, agent: SandboxAgent) -> None:
        agent.set_disconnect_handler(self._disconnect_handler(record.id))
        self._agents[record.id] = agent

    def _mark_running(self, record: Sandbox) -> Sandbox:
        """Running from now on: the timeout counts from here (after a create, a start, a
        resume), as does the idle timeout."""
        expires_at = time.time() + record.timeout if record.timeout else None
        stamp = now_iso()
        record = replace(
            record,
            state=SandboxState.RUNNING,
            updated_at=stamp,
            expires_at=expires_at,
            started_at=stamp,
            error_message=None,
        )
        self.store.put(record)
        self._records[record.id] = record
        self.activity.touch(record.id)
        return record

    def pool_template_changed(self, template: str) -> None:
        """An image template was imported, replaced or deleted (see WarmPool.template_changed)."""
        self.pool.template_changed(template)

    # ------------------------------------------------------------------ teardown
    async def _destroy(self, sandbox_id: str, forget_record: bool = True) -> bool:
        """Free everything the sandbox holds on the host. If that fails it is retried from
        the background loop (`_reclaim`) until it works: a sandbox is never left running
        with nobody tracking it. `forget_record`: drop its record once it is reclaimed."""
        try:
            await asyncio.shield(self.runtime.destroy(sandbox_id))
        except Exception as exc:
            log.warning("sandbox %s could not be torn down (%r); retrying in the background", sandbox_id, exc)
            self._unreclaimed[sandbox_id] = forget_record or self._unreclaimed.get(sandbox_id, False)
            return False
        self._unreclaimed.pop(sandbox_id, None)
        return True

    async def _reclaim_loop(self) -> None:
        while True:
            await asyncio.sleep(RECLAIM_INTERVAL)
            if self.space is not None:
                self.space.keep_reserve()
            for sandbox_id, forget_record in list(self._unreclaimed.items()):
                if sandbox_id in self._deleting or not await self._destroy(sandbox_id, forget_record):
                    continue
                log.info("sandbox %s: torn down after an earlier failure", sandbox_id)
                self.pool.resume()
                if forget_record and sandbox_id in self._records:
                    with contextlib.suppress(WorkspaceError):
                        self.store.delete(sandbox_id)
                        self._records.pop(sandbox_id, None)
                        self.activity.forget(sandbox_id)

    # ------------------------------------------------------------------ agent loss
    def _disconnect_handler(self, sandbox_id: str) -> Callable[[], Awaitable[None]]:
        async def lost() -> None:
            sandbox_id_var.set(sandbox_id)
            request_id_var.set("-")
            self.metrics.agent_disconnects.inc()
            dropped = self._agents.pop(sandbox_id, None)
            if sandbox_id in self._deleting or self._closing:
                return
            record = self._records.get(sandbox_id)
            if record is None:
                return
            reason = self.runtime.lost_reason(sandbox_id) if isinstance(self.runtime, ClusterRuntime) else None
            if dropped is not None and dropped.protocol_error is not None:
                # Code in the sandbox replaced or subverted its agent: never connect to it again.
                reason = f"the sandbox agent broke the link protocol ({dropped.protocol_error})"
            if reason is None and record.state == SandboxState.RUNNING and await self._relink(sandbox_id):
                log.warning("sandbox %s: the agent link dropped; connected again", sandbox_id)
                return
            log.warning("sandbox %s: %s", sandbox_id, reason or AGENT_LOST)
            self._set_state(record, SandboxState.ERROR, reason or AGENT_LOST)

        return lost

    async def _relink(self, sandbox_id: str) -> bool:
        """The link dropped but the agent may live on (its processes, background ones and
        their output logs with them): connect to it again, a few times a minute at most, so
        an agent that keeps dropping links still ends in `error`."""
        now = time.monotonic()
        if len(self._relinked) > 1024:  # forget sandboxes whose last relink is long past
            self._relinked = {k: v for k, v in self._relinked.items() if now - v[-1] < RELINK_WINDOW}
        recent = [t for t in self._relinked.get(sandbox_id, []) if now - t < RELINK_WINDOW]
        if len(recent) >= RELINK_LIMIT:
            return False
        self._relinked[sandbox_id] = [*recent, now]
        started = await self.runtime.running(sandbox_id)
        if started is None:
            return False
        try:
            agent = await self._connect(sandbox_id, started.agent_address, RELINK_TIMEOUT)
        except (AgentNotConnected, OSError):
            return False
        if sandbox_id in self._deleting or self._closing or sandbox_id not in self._records:
            await agent.close()
            return False
        self._agents[sandbox_id] = agent
        return True

    # ------------------------------------------------------------------ SandboxEvents (cluster runtimes)
    def sandbox_lost(self, sandbox_id: str, reason: str) -> None:
        """The cluster says the sandbox is over: the error carries its reason (evicted, OOM,
        node lost), also when the link dropped first and said less."""
        record = self._records.get(sandbox_id)
        if record is None or sandbox_id in self._deleting or self._closing:
            return
        lost_link = record.state == SandboxState.ERROR and record.error_message == AGENT_LOST
        if record.state not in (SandboxState.RUNNING, SandboxState.STARTING) and not lost_link:
            return
        agent = self._agents.pop(sandbox_id, None)
        if agent is not None:
            self._tasks.spawn(agent.close(), sandbox_id)
        self._set_state(record, SandboxState.ERROR, reason)

    def sandbox_known(self, sandbox_id: str) -> bool:
        return sandbox_id in self._records or self.pool.holds(sandbox_id)

    def _set_state(self, record: Sandbox, state: SandboxState, message: str | None = None) -> Sandbox:
        record = record.with_state(state, now_iso(), message)
        self.store.put(record)  # first: if the write fails, nothing claims the new state
        self._records[record.id] = record
        return record

    # ------------------------------------------------------------------ delete
    async def delete(self, sandbox_id: str, force: bool = False) -> None:
        """Delete a sandbox in any state. A delete racing another one answers once the
        sandbox is gone; one racing a lifecycle operation runs after it."""
        self.record(sandbox_id)
        async with self.gates(sandbox_id).operation():
            try:
                record = self.record(sandbox_id)
            except SandboxNotFound:
                return  # another delete finished it while this one waited
            await self.remove(record, force=force)
        self.gates.forget(sandbox_id)

    async def remove(self, record: Sandbox, *, force: bool) -> None:
        """Delete `record`'s sandbox for good (the caller holds its gate, or is recovery)."""
        sandbox_id = record.id
        gone = self._deleting.get(sandbox_id)
        if gone is not None:
            await gone.wait()  # someone else is already deleting it
            return
        gone = self._deleting[sandbox_id] = asyncio.Event()
        try:
            was = record.state
            if was != SandboxState.DELETING:
                record = self._set_state(record, SandboxState.DELETING, record.error_message)
            agent = self._agents.pop(sandbox_id, None)
            if agent is not None:
                if not force and agent.alive and was in CONNECTED_STATES:
                    with contextlib.suppress(Exception):
                        await self.runtime.thaw(sandbox_id)  # a frozen process cannot take its SIGTERM
                        await asyncio.wait_for(agent.shutdown(SHUTDOWN_GRACE), SHUTDOWN_GRACE + 1.0)
                await agent.close()
            for callback in self._on_sandbox_gone:
                callback(sandbox_id)
            await self._withdraw(sandbox_id)
            if not await self._destroy(sandbox_id):
                # Still holds host resources: stays listed (deleting) until the background
                # retry tears it down and drops the record.
                raise ResourceExhausted(
                    f"sandbox {sandbox_id} could not be removed yet; the server keeps trying", sandbox_id=sandbox_id
                )
            self.store.delete(sandbox_id)
            self._records.pop(sandbox_id, None)
            self.activity.forget(sandbox_id)
            self.pool.resume()  # its disk is free: a pool that ran out of room fills again
        finally:
            del self._deleting[sandbox_id]
            gone.set()

    # ------------------------------------------------------------------ for the lifecycle service and recovery
    def set_state(self, record: Sandbox, state: SandboxState, message: str | None = None) -> Sandbox:
        return self._set_state(record, state, message)

    def put(self, record: Sandbox) -> Sandbox:
        """Store a changed record (store first: if the write fails, nothing claims it)."""
        self.store.put(record)
        self._records[record.id] = record
        return record

    def mark_running(self, record: Sandbox) -> Sandbox:
        return self._with_nfs_url(self._mark_running(record))

    def records(self) -> builtins.list[Sandbox]:
        return list(self._records.values())

    def load(self, records: Iterable[Sandbox]) -> None:
        """Take stored records in (at start, before anything else changes them)."""
        self._records.update((record.id, record) for record in records)

    def stored(self, sandbox_id: str) -> Sandbox | None:
        return self._records.get(sandbox_id)

    def connected(self, sandbox_id: str) -> bool:
        return sandbox_id in self._agents

    async def connect(self, sandbox_id: str, address: AgentAddress, timeout: float) -> SandboxAgent:
        """Connect to a sandbox's agent; `attach` makes it the sandbox's link."""
        return await self._connect(sandbox_id, address, timeout)

    def attach(self, sandbox_id: str, agent: SandboxAgent) -> None:
        self._agents[sandbox_id] = agent

    async def export(self, sandbox_id: str) -> None:
        await self._export(sandbox_id)

    async def destroy(self, sandbox_id: str, forget_record: bool = True) -> bool:
        return await self._destroy(sandbox_id, forget_record)

    def deleting(self, sandbox_id: str) -> bool:
        return sandbox_id in self._deleting

    async def drop_connection(self, sandbox_id: str) -> None:
        """Close the agent link before the sandbox's processes end (a stop): its loss is
        expected, not an error."""
        agent = self._agents.pop(sandbox_id, None)
        for callback in self._on_sandbox_gone:
            callback(sandbox_id)
        await self._withdraw(sandbox_id)
        if agent is not None:
            agent.set_disconnect_handler(None)
            await agent.close()

    async def boot(self, record: Sandbox, *, existing_disk: bool) -> Sandbox:
        """Start `record` (in state starting) on its kept disk or a copied one; returns it
        with its host pid, its agent connected. The runtime undoes a failed boot itself."""
        spec = SandboxSpec(
            record.id, self.templates.get(record.template), record.limits, record.network, existing_disk=existing_disk
        )
        started = await self.runtime.start(spec)
        try:
            agent = await self._connect(record.id, started.agent_address, self.settings.agent_connect_timeout)
        except BaseException as exc:
            await asyncio.shield(self.runtime.stop(record.id))
            if isinstance(exc, AgentNotConnected):
                raise RuntimeFailure(f"sandbox {record.id} started but its agent never answered") from exc
            raise
        self._agents[record.id] = agent
        await self._export(record.id)
        return replace(record, host_pid=started.host_pid)

    def counts_by_state(self) -> dict[str, int]:
        counts = {state.value: 0 for state in SandboxState}
        for record in self._records.values():
            counts[record.state.value] += 1
        return counts

    def warm_count(self) -> int:
        return self.pool.count()


def epoch(iso: str) -> float:
    """A record's timestamp (`now_iso()`) as Unix time."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
