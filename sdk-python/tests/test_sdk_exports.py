"""The public surface: every name the seed README uses is importable from the package."""

from __future__ import annotations

import builtins
import dataclasses
import typing
from pathlib import Path

import pytest

import workspace_sdk

# Every name the seed README (sdk-python/README.md) imports or refers to.
SEED_NAMES = [
    "WorkspaceClient",
    "AsyncWorkspaceClient",
    "CreateSandboxParams",
    "RunCommandOptions",
    "PtyOptions",
    "WorkspaceError",
    "SandboxNotFoundError",
    "TemplateExistsError",
    "TemplateInUseError",
    "TemplateNotFoundError",
    "FileNotFoundError",
    "PermissionDeniedError",
    "ProcessTimeoutError",
    "PtyNotFoundError",
    "AgentNotConnectedError",
    "Sandbox",
    "CommandResult",
    "ProcessEvent",
    "StdoutEvent",
    "StderrEvent",
    "ExitEvent",
    "ErrorEvent",
    "FileInfo",
    "SandboxState",
    "FileType",
]

DOCS_EXCEPTIONS = [
    "InvalidImageError",
    "BuildNotFoundError",
    "BuildFailedError",
    "BuildTimeoutError",
    "BuildCancelledError",
    "InvalidRequestError",
    "CommandNotFoundError",
    "AuthenticationError",
    "ProcessNotFoundError",
    "SandboxNotRunningError",
    "SandboxPausedError",
    "InvalidStateTransitionError",
    "FileExistsError",
    "WorkspaceConnectionError",
    "TagInUseError",
    "StdinClosedError",
]

# Background processes and file watching (docs/api.md), beside the seed's names.
PROCESS_AND_WATCH_NAMES = [
    "ProcessHandle",
    "AsyncProcessHandle",
    "ProcessOutputEvent",
    "DroppedEvent",
    "ProcessState",
    "FileWatch",
    "AsyncFileWatch",
    "FileWatchEvent",
    "FileWatchEventType",
    "PortForward",
    "AsyncPortForward",
    "Build",
    "BuildStep",
]


@pytest.mark.parametrize("name", SEED_NAMES + DOCS_EXCEPTIONS + PROCESS_AND_WATCH_NAMES)
def test_name_is_exported(name: str) -> None:
    assert name in workspace_sdk.__all__
    assert getattr(workspace_sdk, name) is not None


def test_all_is_resolvable_sorted_and_unique() -> None:
    names = workspace_sdk.__all__
    assert len(names) == len(set(names))
    for name in names:
        assert hasattr(workspace_sdk, name), name


def test_star_import_exposes_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from workspace_sdk import *", namespace)
    exported = {name for name in namespace if name != "__builtins__"}
    assert exported == set(workspace_sdk.__all__)


def test_readme_import_lines_resolve() -> None:
    readme = Path(__file__).resolve().parents[1] / "README.md"
    text = readme.read_text()
    imported: set[str] = set()
    for block in text.split("from workspace_sdk import")[1:]:
        head = block.split(")")[0] if block.lstrip().startswith("(") else block.split("\n")[0]
        imported |= {n.strip(" (\n,") for n in head.replace("\n", ",").split(",") if n.strip(" (\n,")}
    assert imported, "README has no `from workspace_sdk import` lines"
    assert imported <= set(workspace_sdk.__all__)


def test_seed_dataclass_fields_and_defaults() -> None:
    def fields(cls: type) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    assert fields(workspace_sdk.Sandbox)[:11] == [
        "id",
        "template",
        "state",
        "created_at",
        "updated_at",
        "name",
        "env",
        "metadata",
        "nfs_url",
        "timeout",
        "error_message",
    ]
    assert set(fields(workspace_sdk.Sandbox)[11:]) == {
        "expires_at",
        "cpu",
        "memory_mb",
        "pids",
        "disk_mb",
        "network",
        "on_timeout",
        "idle_timeout",
        "auto_resume",
    }
    assert all(f.default is None for f in dataclasses.fields(workspace_sdk.Sandbox)[11:])
    assert fields(workspace_sdk.CommandResult)[:3] == ["exit_code", "stdout", "stderr"]
    assert fields(workspace_sdk.FileInfo) == ["name", "path", "type", "size", "modified_at", "mode"]
    listing = workspace_sdk.FileList([workspace_sdk.FileInfo("a", "/a", "file", 0)])
    assert isinstance(listing, list) and listing.truncated is False and len(listing) == 1
    # Fields added since the seed come after its own, with defaults.
    assert fields(workspace_sdk.StdoutEvent) == ["type", "data", "offset", "end"]
    assert fields(workspace_sdk.StderrEvent) == ["type", "data", "offset", "end"]
    assert fields(workspace_sdk.ExitEvent)[:2] == ["type", "code"]
    assert workspace_sdk.ExitEvent(code=0) == workspace_sdk.ExitEvent(0)
    assert fields(workspace_sdk.ErrorEvent) == ["type", "message", "code"]
    assert fields(workspace_sdk.RunCommandOptions) == [
        "args",
        "env",
        "cwd",
        "timeout",
        "user",
        "stdin",
    ]
    assert fields(workspace_sdk.PtyOptions) == ["cols", "rows", "shell"]
    params = workspace_sdk.CreateSandboxParams()
    assert all(getattr(params, name) is None for name in fields(workspace_sdk.CreateSandboxParams))


def test_events_build_without_type_and_narrow_by_it() -> None:
    events: list[workspace_sdk.ProcessEvent] = [
        workspace_sdk.StdoutEvent(data="out"),
        workspace_sdk.StderrEvent("err"),
        workspace_sdk.ExitEvent(code=3),
        workspace_sdk.ErrorEvent(message="late", code="PROCESS_TIMEOUT"),
    ]
    assert [e.type for e in events] == ["stdout", "stderr", "exit", "error"]
    assert all(isinstance(e, workspace_sdk.ProcessEvent) for e in events)
    assert workspace_sdk.ErrorEvent("m").code is None


def test_literal_aliases() -> None:
    # The seed's five states, plus the lifecycle's paused and deleting (additive only).
    assert set(typing.get_args(workspace_sdk.SandboxState)) == {
        "starting",
        "running",
        "paused",
        "stopping",
        "stopped",
        "deleting",
        "error",
    }
    assert set(typing.get_args(workspace_sdk.OnTimeout)) == {"delete", "stop", "pause"}
    assert set(typing.get_args(workspace_sdk.FileType)) == {"file", "directory", "symlink", "other"}


def test_error_names_shadow_builtins_only_inside_the_package() -> None:
    assert workspace_sdk.FileNotFoundError is not builtins.FileNotFoundError
    assert issubclass(workspace_sdk.FileNotFoundError, builtins.FileNotFoundError)
    assert issubclass(workspace_sdk.FileExistsError, builtins.FileExistsError)
    assert issubclass(workspace_sdk.PermissionDeniedError, builtins.PermissionError)
    assert issubclass(workspace_sdk.ProcessTimeoutError, builtins.TimeoutError)


def test_package_ships_py_typed() -> None:
    assert (Path(workspace_sdk.__file__).parent / "py.typed").exists()
