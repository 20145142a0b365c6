"""Exceptions, and the one table that maps server error codes to them.

The server answers every failure with ``{"code", "message", "details"}``; the envelope's
``code`` (never the HTTP status) picks the exception class through ``ERROR_CODE_TABLE``.
Errors that never reach the server (refused connections, client-side timeouts) are
``WorkspaceConnectionError`` and its subclass ``RequestTimeoutError``.
"""

from __future__ import annotations

import builtins
import errno
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, ClassVar

import httpx

__all__ = [
    "ERROR_CODE_TABLE",
    "AgentNotConnectedError",
    "AuthenticationError",
    "CommandNotFoundError",
    "FileExistsError",
    "FileNotFoundError",
    "InvalidRequestError",
    "InvalidStateTransitionError",
    "PermissionDeniedError",
    "ProcessNotFoundError",
    "ProcessTimeoutError",
    "PtyNotFoundError",
    "RequestTimeoutError",
    "SandboxNotFoundError",
    "SandboxNotRunningError",
    "SandboxPausedError",
    "StdinClosedError",
    "TagInUseError",
    "TemplateNotFoundError",
    "WaitTimeoutError",
    "WorkspaceConnectionError",
    "WorkspaceError",
    "error_from_envelope",
    "error_from_response",
    "error_from_transport",
]


class WorkspaceError(Exception):
    """Base class of every exception the SDK raises.

    Attributes:
        code: the server's error code (``"SANDBOX_NOT_FOUND"``), ``"HTTP_<status>"`` for a
            non-JSON error body, or an SDK code such as ``"CONNECTION_ERROR"``.
        message: human-readable description.
        details: structured context from the server (e.g. ``sandbox_id``, ``path``).
        status_code: HTTP status of the failed response, when there was one.
    """

    # errno given to the subclasses that are also builtin OSErrors, so that
    # ``except OSError as e: e.errno == errno.ENOENT`` works as it does for local files.
    _os_errno: ClassVar[int | None] = None

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: Mapping[str, Any] | None = None,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or _DEFAULT_CODES.get(type(self), "WORKSPACE_ERROR")
        self.details: dict[str, Any] = dict(details or {})
        self.status_code = status_code
        if isinstance(self, OSError):
            _fill_os_error(self, self._os_errno, message, self.details.get("path"))

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # The keyword-only constructor would otherwise break pickling (e.g. across processes).
        return (
            _rebuild_error,
            (type(self), self.message, self.code, self.details, self.status_code),
        )

    def _detail(self, key: str) -> Any:
        return self.details.get(key)


def _fill_os_error(error: OSError, errno_value: int | None, message: str, path: Any) -> None:
    error.errno = errno_value
    error.strerror = message
    error.filename = path if isinstance(path, str) else None


def _rebuild_error(
    cls: type[WorkspaceError],
    message: str,
    code: str,
    details: dict[str, Any],
    status_code: int | None,
) -> WorkspaceError:
    return cls(message, code=code, details=details, status_code=status_code)


class InvalidRequestError(WorkspaceError):
    """The request failed validation; ``errors`` lists what was wrong."""

    @property
    def errors(self) -> list[Any]:
        value = self._detail("errors")
        return value if isinstance(value, list) else []


class CommandNotFoundError(WorkspaceError):
    """The command is not on the sandbox's ``PATH``."""

    @property
    def command(self) -> str | None:
        return _optional_str(self._detail("command"))


class AuthenticationError(WorkspaceError):
    """The API key is missing or wrong."""


class PermissionDeniedError(WorkspaceError, builtins.PermissionError):
    """The sandbox user may not do this (also a builtin ``PermissionError``)."""

    _os_errno = errno.EACCES

    @property
    def path(self) -> str | None:
        return _optional_str(self._detail("path"))


class SandboxNotFoundError(WorkspaceError):
    """No sandbox has this id (it never existed, was deleted, or expired)."""

    @property
    def sandbox_id(self) -> str | None:
        return _optional_str(self._detail("sandbox_id"))


class TemplateNotFoundError(WorkspaceError):
    """No template has this name."""

    @property
    def template(self) -> str | None:
        return _optional_str(self._detail("template"))


class TemplateExistsError(WorkspaceError):
    """A template of this name exists already (import, build or snapshot with ``replace=True``
    to replace it); built-in names are never free."""

    @property
    def template(self) -> str | None:
        return _optional_str(self._detail("template"))


class TemplateInUseError(WorkspaceError):
    """Sandboxes still run from this template: delete them first (``sandboxes`` lists some)."""

    @property
    def template(self) -> str | None:
        return _optional_str(self._detail("template"))


class InvalidImageError(WorkspaceError):
    """The image archive (or a sandbox's changes) cannot become a template. ``reason`` is one
    of ``unsafe_path``, ``unsafe_link``, ``device_node``, ``corrupt``, ``digest_mismatch``,
    ``unsupported_media_type``, ``unknown_format``, ``unsupported_entry``."""

    @property
    def reason(self) -> str | None:
        return _optional_str(self._detail("reason"))


class BuildNotFoundError(WorkspaceError):
    """No build of this id (finished builds' records are kept until deleted, the last 200)."""

    @property
    def build_id(self) -> str | None:
        return _optional_str(self._detail("build_id"))


class BuildFailedError(WorkspaceError):
    """A template build ended in error. ``step`` and ``line`` name the failing step (0-based
    index, Containerfile line), ``exit_code`` a failing RUN's status; the build's log is at
    ``GET /builds/{build_id}/logs``."""

    @property
    def build_id(self) -> str | None:
        return _optional_str(self._detail("build_id"))

    @property
    def step(self) -> int | None:
        value = self._detail("step")
        return value if isinstance(value, int) else None

    @property
    def line(self) -> int | None:
        value = self._detail("line")
        return value if isinstance(value, int) else None

    @property
    def exit_code(self) -> int | None:
        value = self._detail("exit_code")
        return value if isinstance(value, int) else None


class BuildTimeoutError(BuildFailedError):
    """The build went past its time limit (``timeout``); its step sandbox was deleted."""


class BuildCancelledError(BuildFailedError):
    """The build was cancelled (deleted while building, or cut by a server restart)."""


class FileNotFoundError(WorkspaceError, builtins.FileNotFoundError):
    """The path does not exist in the sandbox (also a builtin ``FileNotFoundError``)."""

    _os_errno = errno.ENOENT

    @property
    def path(self) -> str | None:
        return _optional_str(self._detail("path"))


class FileExistsError(WorkspaceError, builtins.FileExistsError):
    """The path already exists (also a builtin ``FileExistsError``)."""

    _os_errno = errno.EEXIST

    @property
    def path(self) -> str | None:
        return _optional_str(self._detail("path"))


class ProcessNotFoundError(WorkspaceError):
    """No process with this pid or tag was started through the API (or an exited background
    process is no longer retained)."""

    @property
    def pid(self) -> int | None:
        return _optional_int(self._detail("pid"))

    @property
    def tag(self) -> str | None:
        return _optional_str(self._detail("tag"))


class TagInUseError(WorkspaceError):
    """A running process of the sandbox already has this tag (``pid`` says which)."""

    @property
    def tag(self) -> str | None:
        return _optional_str(self._detail("tag"))

    @property
    def pid(self) -> int | None:
        return _optional_int(self._detail("pid"))


class StdinClosedError(WorkspaceError):
    """The process's stdin takes no more input: ``reason`` is ``"exited"``, ``"closed"``
    (``close_stdin`` was called) or ``"not_enabled"`` (started without ``stdin=True``)."""

    @property
    def pid(self) -> int | None:
        return _optional_int(self._detail("pid"))

    @property
    def reason(self) -> str | None:
        return _optional_str(self._detail("reason"))


class PtyNotFoundError(WorkspaceError):
    """No live terminal session has this id."""

    @property
    def pty_id(self) -> str | None:
        return _optional_str(self._detail("pty_id"))


class ProcessTimeoutError(WorkspaceError, builtins.TimeoutError):
    """The command outlived its own ``RunCommandOptions.timeout`` and was killed.

    ``stdout`` and ``stderr`` hold the output produced before the kill.
    """

    _os_errno = errno.ETIMEDOUT

    @property
    def timeout(self) -> float | None:
        value = self._detail("timeout")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def stdout(self) -> str:
        return _optional_str(self._detail("stdout")) or ""

    @property
    def stderr(self) -> str:
        return _optional_str(self._detail("stderr")) or ""


class SandboxNotRunningError(WorkspaceError):
    """The sandbox exists but is not running (``state`` says what it is)."""

    @property
    def sandbox_id(self) -> str | None:
        return _optional_str(self._detail("sandbox_id"))

    @property
    def state(self) -> str | None:
        return _optional_str(self._detail("state"))


class SandboxPausedError(WorkspaceError):
    """A command or PTY was started on a paused sandbox created with ``auto_resume=False``:
    resume it first."""

    @property
    def sandbox_id(self) -> str | None:
        return _optional_str(self._detail("sandbox_id"))


class InvalidStateTransitionError(WorkspaceError):
    """A lifecycle operation the sandbox's state does not allow (resume of a stopped sandbox,
    start of a paused one, ...); ``state`` and ``operation`` say which."""

    @property
    def sandbox_id(self) -> str | None:
        return _optional_str(self._detail("sandbox_id"))

    @property
    def state(self) -> str | None:
        return _optional_str(self._detail("state"))

    @property
    def operation(self) -> str | None:
        return _optional_str(self._detail("operation"))


class AgentNotConnectedError(WorkspaceError):
    """The agent inside the sandbox is not reachable, so nothing can run there right now."""

    @property
    def sandbox_id(self) -> str | None:
        return _optional_str(self._detail("sandbox_id"))


class WorkspaceConnectionError(WorkspaceError):
    """The SDK could not talk to the server: refused or dropped connection, bad URL, or a
    stream that ended unexpectedly. Nothing here came from the server's error envelope."""

    @property
    def url(self) -> str | None:
        return _optional_str(self._detail("url"))


class RequestTimeoutError(WorkspaceConnectionError, builtins.TimeoutError):
    """The HTTP request exceeded the client's ``timeout``.

    This is the client giving up on waiting, not the command's own timeout (that one is
    ``ProcessTimeoutError``).
    """

    _os_errno = errno.ETIMEDOUT


class WaitTimeoutError(WorkspaceError, builtins.TimeoutError):
    """A client-side wait (``wait_for_state``, ``PtyHandle.wait``) ran out of time."""

    _os_errno = errno.ETIMEDOUT


# The single source of truth for code -> exception. Codes that the server documents but that
# need no dedicated class map to WorkspaceError explicitly, so the table doubles as the
# complete list of codes the SDK knows. Unknown codes fall back to WorkspaceError too.
ERROR_CODE_TABLE: Mapping[str, type[WorkspaceError]] = MappingProxyType(
    {
        "INVALID_REQUEST": InvalidRequestError,
        "COMMAND_NOT_FOUND": CommandNotFoundError,
        "UNAUTHORIZED": AuthenticationError,
        "PERMISSION_DENIED": PermissionDeniedError,
        "SANDBOX_NOT_FOUND": SandboxNotFoundError,
        "TEMPLATE_NOT_FOUND": TemplateNotFoundError,
        "FILE_NOT_FOUND": FileNotFoundError,
        "PROCESS_NOT_FOUND": ProcessNotFoundError,
        "PTY_NOT_FOUND": PtyNotFoundError,
        "NOT_FOUND": WorkspaceError,
        "METHOD_NOT_ALLOWED": WorkspaceError,
        "PROCESS_TIMEOUT": ProcessTimeoutError,
        "SANDBOX_NOT_RUNNING": SandboxNotRunningError,
        "SANDBOX_PAUSED": SandboxPausedError,
        "INVALID_STATE_TRANSITION": InvalidStateTransitionError,
        "TEMPLATE_EXISTS": TemplateExistsError,
        "TEMPLATE_IN_USE": TemplateInUseError,
        "INVALID_IMAGE": InvalidImageError,
        "IMAGE_TOO_LARGE": WorkspaceError,
        "BUILD_NOT_FOUND": BuildNotFoundError,
        "BUILD_FAILED": BuildFailedError,
        "BUILD_TIMEOUT": BuildTimeoutError,
        "BUILD_CANCELLED": BuildCancelledError,
        "FILE_EXISTS": FileExistsError,
        "TAG_IN_USE": TagInUseError,
        "STDIN_CLOSED": StdinClosedError,
        "DIRECTORY_NOT_EMPTY": WorkspaceError,
        "NOT_A_DIRECTORY": WorkspaceError,
        "IS_A_DIRECTORY": WorkspaceError,
        "PAYLOAD_TOO_LARGE": WorkspaceError,
        "HEADERS_TOO_LARGE": WorkspaceError,
        "DISK_QUOTA_EXCEEDED": WorkspaceError,
        "SHUTTING_DOWN": WorkspaceError,
        "RESOURCE_EXHAUSTED": WorkspaceError,
        "INTERNAL": WorkspaceError,
        "PORT_UNREACHABLE": WorkspaceError,
        "UPSTREAM_TIMEOUT": WorkspaceError,
        "AGENT_NOT_CONNECTED": AgentNotConnectedError,
        "STORAGE_ERROR": WorkspaceError,
    }
)

# Default ``code`` for errors constructed by hand (``SandboxNotFoundError("gone")``), derived
# from the table so the two cannot disagree. SDK-side errors have codes of their own.
_DEFAULT_CODES: dict[type[WorkspaceError], str] = {
    cls: code for code, cls in ERROR_CODE_TABLE.items() if cls is not WorkspaceError
}
_DEFAULT_CODES.update(
    {
        WorkspaceConnectionError: "CONNECTION_ERROR",
        RequestTimeoutError: "REQUEST_TIMEOUT",
        WaitTimeoutError: "WAIT_TIMEOUT",
    }
)


def error_from_envelope(
    envelope: Mapping[str, Any],
    *,
    status_code: int | None = None,
    context: Mapping[str, Any] | None = None,
) -> WorkspaceError:
    """Build the exception for a ``{"code", "message", "details"}`` error envelope.

    ``context`` is what the SDK already knows about the failed call (the sandbox id, the
    path...); it fills in details the server left out, and never overrides the server's.
    """
    code = str(envelope.get("code") or "WORKSPACE_ERROR")
    message = envelope.get("message")
    server_details = envelope.get("details")
    details: dict[str, Any] = dict(context or {})
    if isinstance(server_details, Mapping):
        details.update(server_details)
    error_class = ERROR_CODE_TABLE.get(code, WorkspaceError)
    return error_class(
        message if isinstance(message, str) and message else code,
        code=code,
        details=details,
        status_code=status_code,
    )


def error_from_response(
    status_code: int,
    body: bytes,
    *,
    reason: str = "",
    context: Mapping[str, Any] | None = None,
) -> WorkspaceError:
    """Build the exception for an HTTP error response.

    A body that is not an error envelope (a proxy's HTML page, a crash) becomes a plain
    ``WorkspaceError`` with code ``HTTP_<status>`` and the start of the body as message.
    """
    try:
        envelope = json.loads(body) if body else None
    except ValueError:
        envelope = None
    if isinstance(envelope, Mapping) and isinstance(envelope.get("code"), str):
        return error_from_envelope(envelope, status_code=status_code, context=context)
    text = body.decode("utf-8", errors="replace").strip()
    summary = f"HTTP {status_code} {reason}".rstrip()
    message = f"{summary}: {text[:500]}" if text else summary
    return WorkspaceError(message, code=f"HTTP_{status_code}", details=context, status_code=status_code)


def error_from_transport(exc: Exception, url: str) -> WorkspaceConnectionError:
    """Translate an httpx/websockets/OS transport failure into an SDK exception naming the URL."""
    if isinstance(exc, (httpx.TimeoutException, builtins.TimeoutError)):
        kind = _TIMEOUT_KINDS.get(type(exc), "timed out")
        return RequestTimeoutError(f"request to {url} {kind}", details={"url": url})
    description = str(exc) or type(exc).__name__
    if isinstance(exc, (httpx.ConnectError, ConnectionRefusedError)):
        message = f"cannot connect to {url}: {description}"
    else:
        message = f"connection to {url} failed: {description}"
    return WorkspaceConnectionError(message, details={"url": url})


_TIMEOUT_KINDS: dict[type[BaseException], str] = {
    httpx.ConnectTimeout: "timed out while connecting",
    httpx.ReadTimeout: "timed out waiting for the response",
    httpx.WriteTimeout: "timed out while sending the request",
    httpx.PoolTimeout: "timed out waiting for a free connection in the pool",
}


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
