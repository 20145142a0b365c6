"""Tier 2: Kubernetes is the truth. Each test has its own fake cluster and server; the
cluster's failures (eviction, OOM kill, node loss, a pod deleted behind the server's back,
an expired watch, throttling) must show up as clear sandbox states, and a restarted server
must adopt what the cluster still runs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from tests.support.kubernetes_cluster import NAMESPACE, FakeCluster, fake_cluster
from tests.support.live_server import LiveServer, stop_server
from workspace_server.domain.models import ResourceLimits, Template
from workspace_server.runtimes.base import SandboxSpec
from workspace_server.runtimes.kubernetes import manifests
from workspace_server.runtimes.kubernetes.settings import KubernetesSettings


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    with fake_cluster() as created:
        yield created


class Server:
    def __init__(self, cluster: FakeCluster, **options: Any) -> None:
        self.cluster = cluster
        self.options = options
        self.live: LiveServer | None = None
        self.http: httpx.Client | None = None

    def start(self) -> Server:
        extra = [f"--{key.replace('_', '-')}={value}" for key, value in self.options.items()]
        self.live = self.cluster.server(extra=extra)
        self.http = httpx.Client(base_url=self.live.url + "/api/v1", timeout=60)
        return self

    def stop(self) -> None:
        if self.http is not None:
            self.http.close()
        if self.live is not None:
            stop_server(self.live)

    def create(self) -> str:
        assert self.http is not None
        response = self.http.post("/sandboxes", json={"template": "workspace-test:latest"})
        assert response.status_code == 201, response.text
        return str(response.json()["id"])

    def get(self, sandbox_id: str) -> dict[str, Any]:
        assert self.http is not None
        return dict(self.http.get(f"/sandboxes/{sandbox_id}").json())

    def run(self, sandbox_id: str, command: str) -> httpx.Response:
        assert self.http is not None
        return self.http.post(f"/sandboxes/{sandbox_id}/processes/run", json={"command": "sh", "args": ["-c", command]})


@pytest.fixture
def server(cluster: FakeCluster) -> Iterator[Server]:
    started = Server(cluster).start()
    yield started
    started.stop()


def wait_until(predicate: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def errored_with(server: Server, sandbox_id: str, words: str) -> dict[str, Any]:
    """The sandbox ends in `error` with the cluster's reason. The link may drop before the
    watch brings the pod's new status: the reason then replaces the first, vaguer message."""
    try:
        return dict(
            wait_until(lambda: (r := server.get(sandbox_id))["state"] == "error" and words in r["error_message"] and r)
        )
    except AssertionError:
        raise AssertionError(f"not an error with {words!r}: {server.get(sandbox_id)}") from None


def test_a_sandbox_is_a_pod_and_a_secret_owned_by_it(cluster: FakeCluster, server: Server) -> None:
    sandbox_id = server.create()
    assert server.run(sandbox_id, "echo hi from the pod").json()["stdout"] == "hi from the pod\n"
    pod = cluster.api.run(lambda: cluster.api.store.get("pods", NAMESPACE, sandbox_id))
    secret = cluster.api.run(lambda: cluster.api.store.get("secrets", NAMESPACE, f"{sandbox_id}-agent"))
    assert secret["metadata"]["ownerReferences"][0]["uid"] == pod["metadata"]["uid"]
    assert server.http is not None
    assert server.http.delete(f"/sandboxes/{sandbox_id}").status_code == 204
    # The pod goes, and the garbage collector takes its Secret with it.
    wait_until(
        lambda: not cluster.api.run(lambda: [k for k in cluster.api.store.objects if k[2].startswith(sandbox_id)])
    )


def test_eviction_is_an_error_that_says_so(cluster: FakeCluster, server: Server) -> None:
    sandbox_id = server.create()
    cluster.kubelet.evict(sandbox_id)
    errored_with(server, sandbox_id, "evicted")


def test_an_oom_kill_is_an_error_that_says_so(cluster: FakeCluster, server: Server) -> None:
    sandbox_id = server.create()
    cluster.kubelet.oom_kill(sandbox_id)
    errored_with(server, sandbox_id, "OOM-killed")


def test_node_loss_is_an_error_that_says_so(cluster: FakeCluster, server: Server) -> None:
    sandbox_id = server.create()
    cluster.kubelet.lose_node(sandbox_id)
    errored_with(server, sandbox_id, "node was lost")


def test_a_pod_deleted_behind_the_servers_back_is_an_error(cluster: FakeCluster, server: Server) -> None:
    sandbox_id = server.create()
    cluster.api.run(lambda: cluster.api.store.delete("pods", NAMESPACE, sandbox_id, grace=0))
    errored_with(server, sandbox_id, "pod")


def test_an_expired_watch_lists_again_and_misses_nothing(cluster: FakeCluster, server: Server) -> None:
    first = server.create()
    lists = cluster.api.requests["list pods"]
    cluster.api.expire_history()  # the open watch ends with 410 Gone; its resourceVersion is too old now
    wait_until(lambda: cluster.api.requests["list pods"] == lists + 1)
    cluster.kubelet.evict(first)
    errored_with(server, first, "evicted")
    second = server.create()
    assert server.run(second, "echo still here").json()["stdout"] == "still here\n"


def test_429_retry_after_is_honoured(cluster: FakeCluster, server: Server) -> None:
    cluster.api.throttle(2, retry_after=1)
    started = time.monotonic()
    sandbox_id = server.create()
    assert time.monotonic() - started >= 2.0  # two 429s, each with Retry-After: 1
    assert cluster.api.throttled == 2
    assert server.run(sandbox_id, "echo ok").json()["stdout"] == "ok\n"


def test_client_side_rate_limit_spreads_a_burst(cluster: FakeCluster) -> None:
    limited = Server(cluster, k8s_qps=4, k8s_burst=1).start()
    try:
        mark = time.monotonic()
        for _ in range(3):
            limited.create()
        writes = [t for t, what in cluster.api.request_times if t >= mark and what.startswith("create")]
        assert len(writes) == 6  # a pod and a secret per sandbox
        # 4 per second, no burst: six writes take at least 5 intervals of 0.25 s.
        assert writes[-1] - writes[0] >= 5 * 0.25 * 0.9
    finally:
        limited.stop()


def test_orphans_are_deleted_after_the_grace_period_only(cluster: FakeCluster) -> None:
    sweeping = Server(cluster, k8s_orphan_grace=3).start()
    try:
        settings = KubernetesSettings(template_images={"default": "img"}, server_key=b"k" * 32)
        spec = SandboxSpec("sbx-0000000000abcdef", Template("default", ""), ResourceLimits(), False)
        cluster.api.run(lambda: cluster.api.store.create("pods", NAMESPACE, manifests.pod(spec, settings, "img")))
        created = time.monotonic()
        wait_until(lambda: not any(p["metadata"]["name"] == spec.sandbox_id for p in cluster.pods()), timeout=20)
        assert time.monotonic() - created >= 3 - 1  # not before the grace period (timestamps are whole seconds)
        known = sweeping.create()
        time.sleep(4)
        assert any(p["metadata"]["name"] == known for p in cluster.pods())  # a known sandbox is never an orphan
    finally:
        sweeping.stop()


def test_restart_adopts_live_pods_and_reports_gone_ones(cluster: FakeCluster) -> None:
    first = Server(cluster).start()
    kept = [first.create() for _ in range(3)]
    gone = first.create()
    first.run(kept[0], "echo adopted > /workspace/mark")
    first.stop()  # the pods outlive the server
    cluster.api.run(lambda: cluster.api.store.delete("pods", NAMESPACE, gone, grace=0))
    lists, watches = cluster.api.requests["list pods"], cluster.api.requests["watch pods"]
    assert first.live is not None
    second = Server(cluster)
    second.live = cluster.server(data_dir=first.live.data_dir)
    second.http = httpx.Client(base_url=second.live.url + "/api/v1", timeout=60)
    try:
        for sandbox_id in kept:
            assert second.get(sandbox_id)["state"] == "running"
        assert second.run(kept[0], "cat /workspace/mark").json()["stdout"] == "adopted\n"
        record = second.get(gone)
        assert record["state"] == "error" and "restart" in record["error_message"]
        assert cluster.api.requests["list pods"] - lists == 1
        assert cluster.api.requests["watch pods"] - watches == 1
    finally:
        second.stop()
