"""The Runtime protocol: what the sandbox service needs from an isolation backend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from workspace_server.agent_link.address import AgentAddress
from workspace_server.domain.models import ResourceLimits, Template


@dataclass(frozen=True)
class SandboxSpec:
    sandbox_id: str
    template: Template
    limits: ResourceLimits
    network: bool
    # Boot on the disk the sandbox already has (a start after stop, a fork's copy) instead
    # of a new empty one.
    existing_disk: bool = False
    # Load the egress filter even without network, so that network can be attached fast
    # later (a warm pool sandbox); it lets loopback through, so it changes nothing until then.
    egress_filter: bool = False


@dataclass(frozen=True)
class WorkloadSample:
    """The sandbox's own processes (the agent excluded) at one instant: their pids and the
    CPU time they and their waited-for children have used (clock ticks)."""

    pids: frozenset[int]
    cpu_ticks: int


@dataclass(frozen=True)
class StartedSandbox:
    sandbox_id: str
    agent_address: AgentAddress  # a Unix socket path (local) or a TCP address + token (cluster)
    host_pid: int  # 0 where the sandbox does not run on this host


class Runtime(Protocol):
    name: str

    async def start(self, spec: SandboxSpec) -> StartedSandbox:
        """Start an isolated sandbox whose agent listens at `agent_address`."""
        ...

    async def destroy(self, sandbox_id: str) -> None:
        """Stop and remove everything the sandbox had. Idempotent."""
        ...

    async def running(self, sandbox_id: str) -> StartedSandbox | None:
        """The sandbox if its init (the agent) still runs, else None."""
        ...

    async def list_ids(self) -> list[str]:
        """Every sandbox this runtime still holds resources for."""
        ...

    @property
    def adjustable_limits(self) -> bool:
        """True if apply_limits works on this host."""
        ...

    async def apply_limits(self, sandbox_id: str, current: ResourceLimits, wanted: ResourceLimits) -> None:
        """Change a running sandbox's cpu, memory and pids limits (not disk_mb)."""
        ...

    @property
    def attachable_network(self) -> bool:
        """True if attach_network works: a sandbox started without network can get it."""
        ...

    async def attach_network(self, sandbox_id: str, host_pid: int) -> None:
        """Give a running sandbox started without network its outbound network, filtered
        as at start (a warm pool sandbox claimed by a create that asks for network)."""
        ...

    def oom_kills(self, sandbox_id: str) -> int:
        """How many processes the OOM killer ended inside the sandbox so far."""
        ...

    async def freeze(self, sandbox_id: str) -> None:
        """Freeze every process of the sandbox but its agent (which keeps serving file
        operations and the process list). Idempotent."""
        ...

    async def thaw(self, sandbox_id: str) -> None:
        """Undo freeze. Idempotent."""
        ...

    def frozen(self, sandbox_id: str) -> bool:
        """True if the sandbox's processes are frozen (or being frozen)."""
        ...

    async def stop(self, sandbox_id: str) -> None:
        """End every process and free the sandbox's memory (its cgroups go); keep its disk,
        so `start` with `existing_disk` boots it again. Idempotent."""
        ...

    def has_disk(self, sandbox_id: str) -> bool:
        """True if the sandbox's disk (its files) is still there."""
        ...

    async def copy_disk(self, source_id: str, target_id: str) -> None:
        """Give `target_id` a copy of `source_id`'s disk, owned by the target's own host uid
        range. The caller freezes the source's processes; this makes the copy consistent
        against writers outside them (the agent)."""
        ...

    def workload_sample(self, sandbox_id: str) -> WorkloadSample | None:
        """The sandbox's processes and their CPU time now; None if it has none running."""
        ...

    async def pack_changes(self, sandbox_id: str, target: Path) -> None:
        """Write what an image sandbox changed (its overlay's upper dir) as a layer tar, with
        the image's own uids. The caller freezes the sandbox's processes meanwhile."""
        ...

    def layers_in_use(self) -> list[str]:
        """Digests of the template layers this runtime's sandboxes have mounted."""
        ...

    def check(self) -> None:
        """Raise a clear error if the host cannot run sandboxes."""
        ...


class SandboxEvents(Protocol):
    """What a runtime whose sandboxes can vanish under it (a cluster) tells the service."""

    def sandbox_lost(self, sandbox_id: str, reason: str) -> None:
        """The sandbox is over (evicted, node lost, OOM-killed, deleted): `reason` says why."""
        ...

    def sandbox_known(self, sandbox_id: str) -> bool:
        """True if the service holds the sandbox (a record, or a warm pool entry)."""
        ...


@runtime_checkable
class ClusterRuntime(Protocol):
    """A runtime that watches its sandboxes from outside (Kubernetes): the service attaches
    to it at start and closes it at shutdown."""

    def attach(self, events: SandboxEvents) -> None: ...

    def lost_reason(self, sandbox_id: str) -> str | None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class HostWorkspace:
    """Where a sandbox's /workspace lives on the host, and the host uid/gid of its user
    (what an NFS export squashes every access to)."""

    path: Path
    uid: int
    gid: int
