"""One keyed live server for the E2B contract suite; the real `e2b` SDK is pointed at it with
E2B_API_URL / E2B_SANDBOX_URL (and E2B_API_KEY = the server's key)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from e2b import Sandbox

from tests.support.live_server import LiveServer, start_server, stop_server

API_KEY = "e2b-contract-key"


@pytest.fixture(scope="module")
def e2b_server() -> Iterator[LiveServer]:
    root = Path(tempfile.mkdtemp(prefix="ws-test-e2b-"))
    root.chmod(0o755)
    server = start_server(root / "data", api_key=API_KEY)
    saved = {k: os.environ.get(k) for k in ("E2B_API_URL", "E2B_SANDBOX_URL", "E2B_API_KEY")}
    os.environ.update(E2B_API_URL=server.url + "/e2b", E2B_SANDBOX_URL=server.url + "/e2b/envd", E2B_API_KEY=API_KEY)
    try:
        yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        try:
            with httpx.Client(base_url=server.url + "/api/v1", timeout=60, headers={"X-API-Key": API_KEY}) as client:
                for item in client.get("/sandboxes").json()["sandboxes"]:
                    client.delete(f"/sandboxes/{item['id']}", params={"force": "true"})
        except httpx.HTTPError:
            pass
        stop_server(server)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def e2b_sandbox(e2b_server: LiveServer) -> Iterator[Sandbox]:
    """One sandbox shared by the module's tests (each test uses its own paths)."""
    sandbox = Sandbox.create(timeout=600)
    try:
        yield sandbox
    finally:
        sandbox.kill()
