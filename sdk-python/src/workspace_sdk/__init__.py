"""Python SDK for Workspace, a self-hosted sandbox service.

``WorkspaceClient`` (blocking, thread-safe) and ``AsyncWorkspaceClient`` (asyncio) expose the
same API: ``client.sandbox``, ``client.process``, ``client.filesystem``, ``client.pty`` and
``client.template``.
"""

from ._async.client import AsyncWorkspaceClient
from ._async.filesystem import AsyncFileReadStream
from ._async.process import AsyncProcessStream
from ._async.pty import AsyncPtyHandle
from ._exceptions import (
    ERROR_CODE_TABLE,
    AgentNotConnectedError,
    AuthenticationError,
    CommandNotFoundError,
    FileExistsError,
    FileNotFoundError,
    InvalidRequestError,
    InvalidStateTransitionError,
    PermissionDeniedError,
    ProcessNotFoundError,
    ProcessTimeoutError,
    PtyNotFoundError,
    RequestTimeoutError,
    SandboxNotFoundError,
    SandboxNotRunningError,
    SandboxPausedError,
    TemplateNotFoundError,
    WaitTimeoutError,
    WorkspaceConnectionError,
    WorkspaceError,
)
from ._sync.client import WorkspaceClient
from ._sync.filesystem import FileReadStream
from ._sync.process import ProcessStream
from ._sync.pty import PtyHandle
from ._version import __version__
from .types import (
    AsyncFileContent,
    CommandResult,
    CreateSandboxParams,
    ErrorEvent,
    ExitEvent,
    FileContent,
    FileInfo,
    FileType,
    ForkSandboxParams,
    OnTimeout,
    ProcessEvent,
    ProcessInfo,
    PtyInfo,
    PtyOptions,
    RunCommandOptions,
    Sandbox,
    SandboxState,
    StderrEvent,
    StdoutEvent,
    Template,
)

__all__ = [
    "ERROR_CODE_TABLE",
    "AgentNotConnectedError",
    "AsyncFileContent",
    "AsyncFileReadStream",
    "AsyncProcessStream",
    "AsyncPtyHandle",
    "AsyncWorkspaceClient",
    "AuthenticationError",
    "CommandNotFoundError",
    "CommandResult",
    "CreateSandboxParams",
    "ErrorEvent",
    "ExitEvent",
    "FileContent",
    "FileExistsError",
    "FileInfo",
    "FileNotFoundError",
    "FileReadStream",
    "FileType",
    "ForkSandboxParams",
    "InvalidRequestError",
    "InvalidStateTransitionError",
    "OnTimeout",
    "PermissionDeniedError",
    "ProcessEvent",
    "ProcessInfo",
    "ProcessNotFoundError",
    "ProcessStream",
    "ProcessTimeoutError",
    "PtyHandle",
    "PtyInfo",
    "PtyNotFoundError",
    "PtyOptions",
    "RequestTimeoutError",
    "RunCommandOptions",
    "Sandbox",
    "SandboxNotFoundError",
    "SandboxNotRunningError",
    "SandboxPausedError",
    "SandboxState",
    "StderrEvent",
    "StdoutEvent",
    "Template",
    "TemplateNotFoundError",
    "WaitTimeoutError",
    "WorkspaceClient",
    "WorkspaceConnectionError",
    "WorkspaceError",
    "__version__",
]
