"""The Kubernetes API adapter lists pods in pages (a 10k-pod namespace is never one response),
as one snapshot, against the fake API server of the tier-2 tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fake_kubernetes import FakeKubernetes
from workspace_server.runtimes.kubernetes import api as kubernetes_api
from workspace_server.runtimes.kubernetes.api import KubernetesApi
from workspace_server.runtimes.kubernetes.settings import KubernetesSettings

NAMESPACE = "paging"


@pytest.fixture
def cluster() -> Iterator[FakeKubernetes]:
    fake = FakeKubernetes().start()
    try:
        yield fake
    finally:
        fake.stop()


def add_pods(cluster: FakeKubernetes, count: int, app: str = "ws") -> None:
    for index in range(count):
        cluster.run(
            lambda index=index: cluster.store.create(
                "pods",
                NAMESPACE,
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"name": f"{app}-{index:03d}", "labels": {"app": app}},
                    "spec": {"containers": [{"name": "main", "image": "debian:bookworm"}]},
                },
            )
        )


async def listed(cluster: FakeKubernetes, tmp_path: Path) -> tuple[list[str], str, int]:
    api = KubernetesApi(KubernetesSettings(namespace=NAMESPACE, kubeconfig=cluster.kubeconfig(tmp_path / "kubeconfig")))
    await api.open()
    try:
        before = api.requests
        pods, version = await api.list_pods("app=ws")
        return [pod["metadata"]["name"] for pod in pods], version, api.requests - before
    finally:
        await api.close()


async def test_pods_are_listed_in_pages_as_one_snapshot(
    cluster: FakeKubernetes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kubernetes_api, "LIST_PAGE", 4)
    add_pods(cluster, 10)
    add_pods(cluster, 3, app="other")  # the selector still applies to every page
    version_before = str(cluster.store.revision)

    names, version, requests = await listed(cluster, tmp_path)

    assert names == [f"ws-{index:03d}" for index in range(10)]
    assert requests == 3  # 4 + 4 + 2
    assert version == version_before  # where the watch resumes: the snapshot's version


async def test_a_namespace_within_one_page_is_one_request(
    cluster: FakeKubernetes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kubernetes_api, "LIST_PAGE", 4)
    add_pods(cluster, 4)

    names, _, requests = await listed(cluster, tmp_path)

    assert len(names) == 4 and requests == 1
