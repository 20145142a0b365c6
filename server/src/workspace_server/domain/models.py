"""Domain records: plain dataclasses, no framework."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum


class SandboxState(str, Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERROR = "error"


@dataclass(frozen=True)
class ResourceLimits:
    cpu: float = 1.0
    memory_mb: int = 512
    pids: int = 256
    disk_mb: int = 1024


@dataclass(frozen=True)
class Template:
    name: str
    description: str


@dataclass
class Sandbox:
    id: str
    template: str
    state: SandboxState
    created_at: str
    updated_at: str
    limits: ResourceLimits
    network: bool = False
    name: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    timeout: int | None = None
    expires_at: float | None = None  # unix time
    error_message: str | None = None
    host_pid: int | None = None
    oom_kills: int = 0  # live figure from the runtime, not stored

    def with_state(self, state: SandboxState, updated_at: str, error_message: str | None = None) -> Sandbox:
        return replace(self, state=state, updated_at=updated_at, error_message=error_message)
