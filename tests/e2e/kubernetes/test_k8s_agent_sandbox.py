"""Tier 2, agent-sandbox mode: when discovery shows the agents.x-k8s.io API group, a create
is one SandboxClaim against a SandboxWarmPool (the fake controller binds a warm pod, whose
agent the server's first handshake binds to the sandbox)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.kubernetes_cluster import NAMESPACE, FakeCluster, fake_cluster
from tests.support.live_server import stop_server


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with fake_cluster(agent_sandbox=True) as created:
        yield created


def running_warm_pods(cluster: FakeCluster) -> int:
    return sum(1 for p in cluster.pods() if p.get("status", {}).get("phase") == "Running")  # type: ignore[union-attr]


def test_a_create_is_one_claim_on_the_warm_pool(cluster: FakeCluster) -> None:
    server = cluster.server(extra=["--k8s-mode=auto", "--k8s-warm-pool=1"])
    try:
        deadline = time.monotonic() + 30
        while running_warm_pods(cluster) < 2 and time.monotonic() < deadline:  # one per template
            time.sleep(0.05)
        kinds = {k[0] for k in cluster.api.run(lambda: list(cluster.api.store.objects))}
        assert {"sandboxtemplates", "sandboxwarmpools"} <= kinds
        with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as api:
            before = dict(cluster.api.requests)
            response = api.post("/sandboxes", json={"template": "workspace-test:latest"})
            assert response.status_code == 201, response.text
            sandbox_id = response.json()["id"]
            writes = {
                what: count - before.get(what, 0)
                for what, count in cluster.api.requests.items()
                if what.split()[0] in ("create", "update", "delete") and count != before.get(what, 0)
            }
            assert writes == {"create sandboxclaims": 1}  # the hot path's only API write
            run = api.post(f"/sandboxes/{sandbox_id}/processes/run", json={"command": "echo", "args": ["claimed"]})
            assert run.json()["stdout"] == "claimed\n"
            claim = cluster.api.run(lambda: cluster.api.store.get("sandboxclaims", NAMESPACE, sandbox_id))
            pod_name = claim["status"]["sandbox"]["name"]
            assert api.delete(f"/sandboxes/{sandbox_id}").status_code == 204
            deadline = time.monotonic() + 20
            while any(p["metadata"]["name"] == pod_name for p in cluster.pods()) and time.monotonic() < deadline:  # type: ignore[index]
                time.sleep(0.05)
            assert not any(p["metadata"]["name"] == pod_name for p in cluster.pods())  # type: ignore[index]
    finally:
        stop_server(server)


def test_without_the_api_group_auto_mode_makes_pods(cluster: FakeCluster) -> None:
    cluster.api.agent_sandbox = False  # discovery no longer lists agents.x-k8s.io
    server = cluster.server(extra=["--k8s-mode=auto"])
    try:
        with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as api:
            response = api.post("/sandboxes", json={})
            assert response.status_code == 201, response.text
            assert cluster.api.requests["create pods"] == 1 and cluster.api.requests["create sandboxclaims"] == 0
    finally:
        stop_server(server)
