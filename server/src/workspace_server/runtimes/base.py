"""The Runtime protocol: what the sandbox service needs from an isolation backend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from workspace_server.domain.models import ResourceLimits, Template


@dataclass(frozen=True)
class SandboxSpec:
    sandbox_id: str
    template: Template
    limits: ResourceLimits
    network: bool


@dataclass(frozen=True)
class StartedSandbox:
    sandbox_id: str
    agent_socket: Path
    host_pid: int


class Runtime(Protocol):
    name: str

    async def start(self, spec: SandboxSpec) -> StartedSandbox:
        """Start an isolated sandbox whose agent listens on `agent_socket`."""
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

    def oom_kills(self, sandbox_id: str) -> int:
        """How many processes the OOM killer ended inside the sandbox so far."""
        ...

    def check(self) -> None:
        """Raise a clear error if the host cannot run sandboxes."""
        ...
