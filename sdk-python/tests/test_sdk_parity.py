"""The sync client mirrors the async client exactly, modulo async-ness.

``_sync`` is generated from ``_async``, so this mostly guards the generator's rules and the
hand-written twins in ``_primitives``: every public method must exist on both sides with the
same signature (after renaming Async* types), and be a coroutine only on the async side.
"""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from workspace_sdk import (
    AsyncFileReadStream,
    AsyncFileWatch,
    AsyncPortForward,
    AsyncProcessHandle,
    AsyncProcessStream,
    AsyncPtyHandle,
    AsyncWorkspaceClient,
    FileReadStream,
    FileWatch,
    PortForward,
    ProcessHandle,
    ProcessStream,
    PtyHandle,
    WorkspaceClient,
)
from workspace_sdk._async.filesystem import AsyncFileSystemService
from workspace_sdk._async.process import AsyncProcessService
from workspace_sdk._async.pty import AsyncPtyService
from workspace_sdk._async.sandbox import AsyncSandboxService
from workspace_sdk._async.template import AsyncTemplateService
from workspace_sdk._sync.filesystem import FileSystemService
from workspace_sdk._sync.process import ProcessService
from workspace_sdk._sync.pty import PtyService
from workspace_sdk._sync.sandbox import SandboxService
from workspace_sdk._sync.template import TemplateService


def load_unasync() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "scripts" / "unasync.py"
    spec = importlib.util.spec_from_file_location("workspace_sdk_unasync", path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


unasync = load_unasync()

PAIRS = [
    (AsyncWorkspaceClient, WorkspaceClient),
    (AsyncSandboxService, SandboxService),
    (AsyncProcessService, ProcessService),
    (AsyncFileSystemService, FileSystemService),
    (AsyncPtyService, PtyService),
    (AsyncTemplateService, TemplateService),
    (AsyncProcessStream, ProcessStream),
    (AsyncFileReadStream, FileReadStream),
    (AsyncPtyHandle, PtyHandle),
    (AsyncProcessHandle, ProcessHandle),
    (AsyncFileWatch, FileWatch),
    (AsyncPortForward, PortForward),
]

PROTOCOL_DUNDERS = {
    "__init__",
    "__aenter__",
    "__aexit__",
    "__aiter__",
    "__enter__",
    "__exit__",
    "__iter__",
}


def public_members(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if (not name.startswith("_") or name in PROTOCOL_DUNDERS)
        and not (name.startswith("__") and name not in PROTOCOL_DUNDERS)
    }


def sync_name(name: str) -> str:
    return str(unasync.unasync_line(name))


def test_services_on_clients_match() -> None:
    async_client = AsyncWorkspaceClient("http://x.test")
    sync_client = WorkspaceClient("http://x.test")
    try:
        for attribute in ("sandbox", "process", "filesystem", "pty", "template"):
            async_service = type(getattr(async_client, attribute))
            sync_service = type(getattr(sync_client, attribute))
            assert (async_service, sync_service) in PAIRS
    finally:
        sync_client.close()


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=lambda c: c.__name__)
def test_same_public_names(async_cls: type, sync_cls: type) -> None:
    expected = {sync_name(name) for name in public_members(async_cls)}
    assert expected == set(public_members(sync_cls))


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=lambda c: c.__name__)
def test_same_signatures_modulo_async(async_cls: type, sync_cls: type) -> None:
    sync_members = public_members(sync_cls)
    checked = 0
    for name, async_member in public_members(async_cls).items():
        sync_member = sync_members[sync_name(name)]
        if isinstance(async_member, property):
            assert isinstance(sync_member, property), name
            continue
        if not callable(async_member):
            continue
        async_signature = str(inspect.signature(async_member))
        assert sync_name(async_signature) == str(inspect.signature(sync_member)), name
        assert not inspect.iscoroutinefunction(sync_member), f"{sync_cls.__name__}.{name}"
        checked += 1
    assert checked > 0


@pytest.mark.parametrize(("async_cls", "sync_cls"), PAIRS, ids=lambda c: c.__name__)
def test_io_methods_are_coroutines_on_the_async_side(async_cls: type, sync_cls: type) -> None:
    # Methods that only build a lazy object or register a callback stay synchronous.
    synchronous_by_design = {"__init__", "__aiter__", "run_stream", "read_stream", "watch", "on_data", "port_forward"}
    for name, member in public_members(async_cls).items():
        if isinstance(member, property) or not callable(member):
            continue
        if name in synchronous_by_design:
            assert not inspect.iscoroutinefunction(member), name
        else:
            assert inspect.iscoroutinefunction(member), f"{async_cls.__name__}.{name}"


def test_client_constructor_seed_signature() -> None:
    for cls in (WorkspaceClient, AsyncWorkspaceClient):
        parameters = list(inspect.signature(cls).parameters.values())
        assert [p.name for p in parameters[:3]] == ["api_url", "api_key", "timeout"]
        assert [p.default for p in parameters[:3]] == [None, None, 60.0]
        assert parameters[0].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD


def test_build_helpers_match() -> None:
    """The module-level helpers of a build (`_async/build.py`) have their sync twins."""
    from workspace_sdk._async import build as async_build
    from workspace_sdk._sync import build as sync_build

    def functions(module: ModuleType) -> dict[str, Any]:
        return {
            name: member
            for name, member in inspect.getmembers(module, inspect.isfunction)
            if member.__module__ == module.__name__
        }

    async_functions, sync_functions = functions(async_build), functions(sync_build)
    assert {sync_name(name) for name in async_functions} == set(sync_functions)
    for name, function in async_functions.items():
        assert sync_name(str(inspect.signature(function))) == str(inspect.signature(sync_functions[sync_name(name)]))
