"""Domain records: plain dataclasses, no framework."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, fields, replace
from enum import Enum

from workspace_server.domain.errors import InvalidRequest


# The one list of sandbox state names (the API's schemas and routes use this enum too); the
# transitions between states are in domain/lifecycle.py.
class SandboxState(str, Enum):
    """The state of a sandbox."""

    STARTING = "starting"  # being created, or booted again on its kept disk (start)
    RUNNING = "running"
    PAUSED = "paused"  # its processes are frozen; memory and disk kept; the agent still answers
    STOPPING = "stopping"  # its processes are being ended; its disk is kept
    STOPPED = "stopped"  # no process, no memory; disk and record kept: `start` boots it again
    DELETING = "deleting"  # on its way out: disk and record are being removed
    ERROR = "error"


class OnTimeout(str, Enum):
    """What happens when a sandbox's timeout or idle timeout fires."""

    DELETE = "delete"
    STOP = "stop"
    PAUSE = "pause"


LIMIT_MINIMUMS = {"cpu": 0.05, "memory_mb": 32, "pids": 8, "disk_mb": 8}


@dataclass(frozen=True)
class ResourceLimits:
    """What a sandbox may use: CPUs, memory (MiB, without swap), processes, disk (MiB)."""

    cpu: float = 1.0
    memory_mb: int = 512
    pids: int = 256
    disk_mb: int = 1024

    @classmethod
    def requested(
        cls,
        default: ResourceLimits,
        maximum: ResourceLimits,
        *,
        cpu: float | None = None,
        memory_mb: int | None = None,
        pids: int | None = None,
        disk_mb: int | None = None,
    ) -> ResourceLimits:
        """The limits a create asks for, each one not given taken from `default`; each must
        lie between its minimum and `maximum`'s (InvalidRequest names the first that does not)."""
        limits = cls(
            cpu=default.cpu if cpu is None else cpu,
            memory_mb=default.memory_mb if memory_mb is None else memory_mb,
            pids=default.pids if pids is None else pids,
            disk_mb=default.disk_mb if disk_mb is None else disk_mb,
        )
        for limit in fields(cls):
            value, low, high = getattr(limits, limit.name), LIMIT_MINIMUMS[limit.name], getattr(maximum, limit.name)
            if not low <= value <= high:
                raise InvalidRequest(f"{limit.name} must be between {low} and {high}", field=limit.name)
        return limits


@dataclass(frozen=True)
class ImageConfig:
    """What an image says about every command: defaults a request's own fields override."""

    env: dict[str, str] = field(default_factory=dict)
    working_dir: str | None = None
    user: str | None = None


@dataclass(frozen=True)
class Template:
    """A name sandboxes are made from. The built-in ones (no layers) run on the host's own
    userland; the others are images: layer digests bottom to top, unpacked once each."""

    name: str
    description: str
    digest: str | None = None
    layers: tuple[str, ...] = ()
    size: int = 0
    created_at: str | None = None
    source: str = "builtin"  # builtin | imported | built | snapshot | bootstrap
    config: ImageConfig = field(default_factory=ImageConfig)
    labels: dict[str, str] = field(default_factory=dict)  # a build's LABELs

    @property
    def is_image(self) -> bool:
        return bool(self.layers)


def new_sandbox_id() -> str:
    return "sbx-" + secrets.token_hex(8)


@dataclass
class Sandbox:
    """A sandbox's record: what it was created with and where its life stands."""

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
    expires_at: float | None = None  # unix time; only while running
    on_timeout: OnTimeout = OnTimeout.DELETE
    idle_timeout: int | None = None  # seconds without activity (running only) before on_timeout
    auto_resume: bool = True  # a command or PTY on a paused sandbox resumes it first
    started_at: str | None = None  # the last time it reached running; None until its create finished
    error_message: str | None = None
    host_pid: int | None = None
    oom_kills: int = 0  # live figure from the runtime, not stored
    nfs_url: str | None = None  # live: set while its /workspace is exported, not stored

    def with_state(self, state: SandboxState, updated_at: str, error_message: str | None = None) -> Sandbox:
        return replace(self, state=state, updated_at=updated_at, error_message=error_message)
