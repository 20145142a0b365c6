"""Tier 2: the SDK end-to-end tests against `workspace serve --runtime kubernetes` on the
fake API server, whose fake kubelet runs the real agent for every pod.

`workspace_server` is overridden for this directory; the SDK fixtures are the SDK suite's."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.sdk.conftest import aclient, client, readme_block, run_python, sandbox_id  # noqa: F401
from tests.support.kubernetes_cluster import FakeCluster, fake_cluster
from tests.support.live_server import LiveServer, stop_server


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[FakeCluster]:
    with fake_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def workspace_server(k8s_cluster: FakeCluster) -> Iterator[LiveServer]:
    server = k8s_cluster.server(pool_size=2)
    previous = os.environ.get("WORKSPACE_API_URL")
    os.environ["WORKSPACE_API_URL"] = server.url
    try:
        yield server
    finally:
        try:
            with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as api:
                for item in api.get("/sandboxes").json()["sandboxes"]:
                    api.delete(f"/sandboxes/{item['id']}", params={"force": "true"})
        except httpx.HTTPError:
            pass
        stop_server(server)
        if previous is not None:
            os.environ["WORKSPACE_API_URL"] = previous
