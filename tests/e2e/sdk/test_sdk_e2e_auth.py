"""API-key authentication, on a second live server started with ``--api-key``."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.live_server import LiveServer, start_server, stop_server
from workspace_sdk import AsyncWorkspaceClient, AuthenticationError, WorkspaceClient

API_KEY = "sdk-e2e-secret"


@pytest.fixture(scope="module")
def secured_server() -> Iterator[LiveServer]:
    root = Path(tempfile.mkdtemp(prefix="ws-sdk-auth-"))
    root.chmod(0o755)  # sandboxes run as an unprivileged uid that must reach the data dir
    server = start_server(root / "data", api_key=API_KEY)
    try:
        yield server
    finally:
        stop_server(server)
        shutil.rmtree(root, ignore_errors=True)


def test_missing_and_wrong_keys_are_rejected(secured_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKSPACE_API_KEY", raising=False)
    with WorkspaceClient(secured_server.url) as anonymous:
        with pytest.raises(AuthenticationError) as caught:
            anonymous.sandbox.list()
        assert caught.value.code == "UNAUTHORIZED"
        assert caught.value.status_code == 401
    with WorkspaceClient(secured_server.url, api_key="wrong") as wrong, pytest.raises(AuthenticationError):
        wrong.sandbox.list()


def test_key_from_argument_and_environment(secured_server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    with WorkspaceClient(secured_server.url, api_key=API_KEY) as client:
        assert isinstance(client.sandbox.list(), list)
    monkeypatch.setenv("WORKSPACE_API_KEY", API_KEY)
    monkeypatch.setenv("WORKSPACE_API_URL", secured_server.url)
    with WorkspaceClient() as from_environment:
        assert from_environment.api_url == secured_server.url
        assert isinstance(from_environment.sandbox.list(), list)


async def test_async_client_and_pty_use_the_key(secured_server: LiveServer) -> None:
    async with AsyncWorkspaceClient(secured_server.url, api_key=API_KEY) as client:
        sandbox = await client.sandbox.create()
        try:
            async with await client.pty.connect(sandbox.id) as pty:
                assert pty.pid > 0
            async with AsyncWorkspaceClient(secured_server.url, api_key="wrong") as wrong:
                with pytest.raises(AuthenticationError):
                    await wrong.pty.connect(sandbox.id)
                with pytest.raises(AuthenticationError):
                    async for _event in wrong.process.run_stream(sandbox.id, "true"):
                        pass
        finally:
            await client.sandbox.delete(sandbox.id, force=True)
