"""A cluster for the Kubernetes runtime's end-to-end tests: the fake API server with its
fake kubelet (tier 2), and `workspace serve --runtime kubernetes` pointed at it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.fake_agent_sandbox import FakeAgentSandboxController
from tests.support.fake_kubelet import FakeKubelet
from tests.support.fake_kubernetes import FakeKubernetes
from tests.support.live_server import LiveServer, data_root, start_server

NAMESPACE = "workspace-sandboxes"
IMAGE = "python:3.12-slim"
TEMPLATE_IMAGES = f"default={IMAGE},workspace-test:latest={IMAGE}"


@dataclass
class FakeCluster:
    api: FakeKubernetes
    kubelet: FakeKubelet
    root: Path
    kubeconfig: Path

    def server(self, pool_size: int = 0, extra: list[str] | None = None, data_dir: Path | None = None) -> LiveServer:
        """`workspace serve --runtime kubernetes` against this cluster (reuse `data_dir` to
        restart a server on the same store)."""
        return start_server(
            data_dir or self.root / "data",
            extra=[
                "--runtime=kubernetes",
                f"--k8s-kubeconfig={self.kubeconfig}",
                f"--k8s-namespace={NAMESPACE}",
                f"--k8s-template-image={TEMPLATE_IMAGES}",
                f"--pool-size={pool_size}",
                *(extra or []),
            ],
        )

    def pods(self) -> list[dict[str, object]]:
        return self.api.pods(NAMESPACE)


@contextmanager
def fake_cluster(agent_sandbox: bool = False) -> Iterator[FakeCluster]:
    root = data_root("ws-k8s-")
    api = FakeKubernetes(agent_sandbox=agent_sandbox).start()
    kubelet = FakeKubelet(api, NAMESPACE, root / "nodes")
    if agent_sandbox:
        FakeAgentSandboxController(api, NAMESPACE)
    try:
        yield FakeCluster(api, kubelet, root, api.kubeconfig(root / "kubeconfig"))
    finally:
        kubelet.shutdown()
        api.stop()
        shutil.rmtree(root, ignore_errors=True)


def real_kubeconfig() -> Path | None:
    """Tier 3: a real cluster's kubeconfig, when the environment names one."""
    value = os.environ.get("KUBECONFIG")
    return Path(value) if value and Path(value).is_file() else None
