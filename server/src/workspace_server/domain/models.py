"""Domain records: plain dataclasses, no framework."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum


class SandboxState(str, Enum):
    """Every state a sandbox can be in; the transitions between them are in domain/lifecycle.py."""

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


@dataclass(frozen=True)
class ResourceLimits:
    cpu: float = 1.0
    memory_mb: int = 512
    pids: int = 256
    disk_mb: int = 1024


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

    @property
    def is_image(self) -> bool:
        return bool(self.layers)


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
