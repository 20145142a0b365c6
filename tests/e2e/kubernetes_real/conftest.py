"""Tier 3: the Kubernetes runtime's SDK end-to-end subset against a REAL cluster, when
KUBECONFIG names one (marker `k8s_real`). The server runs here and must reach pod IPs (run
the tests from a pod in the cluster, or a node); sandbox images from WORKSPACE_K8S_TEMPLATE_IMAGES
(default python:3.12-slim), the agent image from WORKSPACE_K8S_AGENT_IMAGE."""

from __future__ import annotations

import os
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.sdk.conftest import aclient, client, readme_block, run_python, sandbox_id  # noqa: F401
from tests.support.kubernetes_cluster import TEMPLATE_IMAGES, real_kubeconfig
from tests.support.live_server import LiveServer, data_root, start_server, stop_server

NO_CLUSTER = "tier 3 needs a real cluster: set KUBECONFIG to its kubeconfig (none here)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "kubernetes_real" in str(item.fspath):
            item.add_marker(pytest.mark.k8s_real)
            if real_kubeconfig() is None:
                item.add_marker(pytest.mark.skip(reason=NO_CLUSTER))


@pytest.fixture(scope="session")
def workspace_server() -> Iterator[LiveServer]:
    kubeconfig = real_kubeconfig()
    if kubeconfig is None:
        pytest.skip(NO_CLUSTER)
    root = data_root("ws-k8s-real-")
    server = start_server(
        root / "data",
        extra=[
            "--runtime=kubernetes",
            f"--k8s-kubeconfig={kubeconfig}",
            f"--k8s-namespace={os.environ.get('WORKSPACE_K8S_NAMESPACE', 'workspace-sandboxes')}",
            f"--k8s-template-image={os.environ.get('WORKSPACE_K8S_TEMPLATE_IMAGES', TEMPLATE_IMAGES)}",
            "--pool-size=1",
        ],
    )
    os.environ["WORKSPACE_API_URL"] = server.url
    try:
        yield server
    finally:
        try:
            with httpx.Client(base_url=server.url + "/api/v1", timeout=120) as api:
                for item in api.get("/sandboxes").json()["sandboxes"]:
                    api.delete(f"/sandboxes/{item['id']}", params={"force": "true"})
        except httpx.HTTPError:
            pass
        stop_server(server)
