"""What a create asks for, as the routes (HTTP, E2B) hand it to SandboxService, and the
timeout policy it implies (also used when a timeout is changed later)."""

from __future__ import annotations

from dataclasses import dataclass

from workspace_server.domain.errors import InvalidRequest
from workspace_server.domain.models import OnTimeout


@dataclass
class CreateRequest:
    template: str | None = None
    name: str | None = None
    env: dict[str, str] | None = None
    metadata: dict[str, str] | None = None
    timeout: int | None = None
    cpu: float | None = None
    memory_mb: int | None = None
    pids: int | None = None
    disk_mb: int | None = None
    network: bool | None = None
    on_timeout: str | None = None
    idle_timeout: int | None = None
    auto_resume: bool | None = None


def timeout_policy(request: CreateRequest) -> tuple[OnTimeout, int | None]:
    try:
        on_timeout = OnTimeout(request.on_timeout or OnTimeout.DELETE.value)
    except ValueError:
        raise InvalidRequest("on_timeout must be one of delete, stop, pause", field="on_timeout") from None
    if request.idle_timeout is not None and request.idle_timeout <= 0:
        raise InvalidRequest("idle_timeout must be a positive number of seconds", field="idle_timeout")
    return on_timeout, request.idle_timeout
