"""Shared fixtures: a live `workspace serve` on loopback with a private data dir."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.live_server import LiveServer, start_server, stop_server
from tests.support.network_peer import Peer, network_peer


@pytest.fixture(scope="session")
def workspace_server() -> Iterator[LiveServer]:
    """One live server for the whole session (no API key)."""
    root = Path(tempfile.mkdtemp(prefix="ws-test-"))
    root.chmod(0o755)  # sandboxes run as an unprivileged uid that must reach the data dir
    server = start_server(root / "data")
    os.environ["WORKSPACE_API_URL"] = server.url
    try:
        yield server
    finally:
        # Sandboxes outlive the server by design; a test session must not leave any behind.
        try:
            with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as client:
                for item in client.get("/sandboxes").json()["sandboxes"]:
                    client.delete(f"/sandboxes/{item['id']}", params={"force": "true"})
        except httpx.HTTPError:
            pass
        stop_server(server)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def server_url(workspace_server: LiveServer) -> str:
    return workspace_server.url


@pytest.fixture
def api(workspace_server: LiveServer) -> Iterator[httpx.Client]:
    """A plain HTTP client on /api/v1 of the shared live server."""
    with httpx.Client(base_url=workspace_server.url + "/api/v1", timeout=60) as client:
        yield client


@pytest.fixture
def sandbox(api: httpx.Client) -> Iterator[dict[str, Any]]:
    """A fresh running sandbox, force-deleted afterwards."""
    response = api.post("/sandboxes", json={})
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    yield created
    api.delete(f"/sandboxes/{created['id']}", params={"force": "true"})


@pytest.fixture
def peer() -> Iterator[Peer]:
    """A TCP server in a network namespace of our own, standing in for other machines."""
    with network_peer() as created:
        yield created
