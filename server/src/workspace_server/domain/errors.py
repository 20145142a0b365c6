"""Domain errors. Each carries a stable code (docs/api.md lists them); the API maps codes
to HTTP statuses (api/errors.py), and the SDK maps the same codes to exceptions."""

from __future__ import annotations

import errno
from typing import Any


class WorkspaceError(Exception):
    """Base of every error the service reports to callers."""

    code = "INTERNAL"

    def __init__(self, message: str, *, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        self.message = message
        self.details = details

    def envelope(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "details": self.details}


class InvalidRequest(WorkspaceError):
    code = "INVALID_REQUEST"


class SandboxNotFound(WorkspaceError):
    code = "SANDBOX_NOT_FOUND"

    def __init__(self, sandbox_id: str) -> None:
        super().__init__(f"sandbox {sandbox_id} not found", sandbox_id=sandbox_id)


class TemplateNotFound(WorkspaceError):
    code = "TEMPLATE_NOT_FOUND"

    def __init__(self, template: str, known: list[str]) -> None:
        super().__init__(
            f"template {template!r} not found; known templates: {', '.join(known)}",
            template=template,
        )


class SandboxNotRunning(WorkspaceError):
    code = "SANDBOX_NOT_RUNNING"

    def __init__(self, sandbox_id: str, state: str) -> None:
        super().__init__(f"sandbox {sandbox_id} is {state}, not running", sandbox_id=sandbox_id, state=state)


class SandboxPaused(WorkspaceError):
    """A command or PTY on a paused sandbox created with auto_resume=false."""

    code = "SANDBOX_PAUSED"

    def __init__(self, sandbox_id: str) -> None:
        super().__init__(
            f"sandbox {sandbox_id} is paused and was created with auto_resume=false: resume it first",
            sandbox_id=sandbox_id,
            state="paused",
        )


class InvalidStateTransition(WorkspaceError):
    """A lifecycle operation the sandbox's current state does not allow (domain/lifecycle.py)."""

    code = "INVALID_STATE_TRANSITION"

    def __init__(self, sandbox_id: str, operation: str, state: str, hint: str) -> None:
        super().__init__(
            f"cannot {operation} sandbox {sandbox_id}: it is {state}; {hint}",
            sandbox_id=sandbox_id,
            operation=operation,
            state=state,
        )


class AgentNotConnected(WorkspaceError):
    code = "AGENT_NOT_CONNECTED"

    def __init__(self, sandbox_id: str, reason: str = "the sandbox agent is not connected") -> None:
        super().__init__(f"sandbox {sandbox_id}: {reason}", sandbox_id=sandbox_id)


class UpstreamTimeout(WorkspaceError):
    """A server inside a sandbox accepted a proxied request but did not answer in time."""

    code = "UPSTREAM_TIMEOUT"

    def __init__(self, sandbox_id: str, port: int, seconds: float) -> None:
        super().__init__(
            f"the server on port {port} of sandbox {sandbox_id} did not answer within {seconds:g} s",
            sandbox_id=sandbox_id,
            port=port,
        )


class ProcessTimeout(WorkspaceError):
    code = "PROCESS_TIMEOUT"


class ProcessNotFound(WorkspaceError):
    code = "PROCESS_NOT_FOUND"


class PtyNotFound(WorkspaceError):
    code = "PTY_NOT_FOUND"

    def __init__(self, pty_id: str) -> None:
        super().__init__(f"pty {pty_id} not found", pty_id=pty_id)


class ResourceExhausted(WorkspaceError):
    code = "RESOURCE_EXHAUSTED"


class RuntimeFailure(WorkspaceError):
    """The isolation tool failed to start or stop a sandbox."""

    code = "INTERNAL"


class StorageError(WorkspaceError):
    code = "STORAGE_ERROR"


class ShuttingDown(WorkspaceError):
    code = "SHUTTING_DOWN"


FILE_TABLE_FULL = (errno.EMFILE, errno.ENFILE)
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def out_of_resources(exc: BaseException) -> ResourceExhausted | None:
    """EMFILE/ENFILE or ENOSPC/EDQUOT anywhere in `exc`'s chain, as the caller's
    RESOURCE_EXHAUSTED (429): the server is out of open files or of disk for now, which is
    load, not a bug. (A sandbox's own full disk never gets here: the agent reports it.)"""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in FILE_TABLE_FULL:
            return ResourceExhausted("the server is out of open files; retry later")
        if isinstance(seen, OSError) and seen.errno in DISK_FULL:
            return ResourceExhausted("the server's disk is full; retry once sandboxes or templates are deleted")
        seen = seen.__cause__ or seen.__context__
    return None


class InvalidImage(WorkspaceError):
    """An uploaded image (or a sandbox's changes) that cannot become a template; `reason` is
    stable: unsafe_path, unsafe_link, device_node, corrupt, digest_mismatch,
    unsupported_media_type, unknown_format, unsupported_entry."""

    code = "INVALID_IMAGE"

    def __init__(self, reason: str, message: str, **details: Any) -> None:
        super().__init__(message, reason=reason, **details)


class ImageTooLarge(WorkspaceError):
    code = "IMAGE_TOO_LARGE"


class TemplateExists(WorkspaceError):
    code = "TEMPLATE_EXISTS"

    def __init__(self, template: str) -> None:
        super().__init__(f"template {template!r} already exists (ask to replace it)", template=template)


class TemplateInUse(WorkspaceError):
    code = "TEMPLATE_IN_USE"

    def __init__(self, template: str, sandboxes: list[str]) -> None:
        super().__init__(
            f"template {template!r} is used by {len(sandboxes)} sandbox(es): delete them first",
            template=template,
            sandboxes=sandboxes[:20],
        )
