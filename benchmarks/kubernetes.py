"""Kubernetes runtime figures (tier 2: the fake API server and kubelet of tests/support, the
real agent over TCP), each beside a same-run baseline:

  k8s_warm_create_first_command  create from the warm pool -> first command's output, against
                                 the local runtime's warm pool in the same run (target: within 2 ms)
  k8s_claim_api_writes           API writes on an agent-sandbox create (target: 1)
  k8s_restart_adoption           a server restart with N sandboxes: adopted, lists, watches, time

    .venv/bin/python benchmarks/kubernetes.py [--iterations 30] [--sandboxes 200]

Writes benchmarks/results/kubernetes.md and prints it."""

from __future__ import annotations

import argparse
import concurrent.futures
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path[0] = str(Path(__file__).resolve().parents[1])

import httpx

from tests.support.kubernetes_cluster import FakeCluster, fake_cluster
from tests.support.live_server import LiveServer, data_root, start_server, stop_server

RESULTS = Path(__file__).resolve().parent / "results" / "kubernetes.md"
TEMPLATE = "workspace-test:latest"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_pool(api: httpx.Client, full: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = api.get("/metrics").text
        for line in text.splitlines():
            if line.startswith("workspace_pool_size{") and TEMPLATE in line and float(line.split()[-1]) >= full:
                return
        time.sleep(0.05)
    raise RuntimeError("the warm pool did not fill")


def warm_first_command(server: LiveServer, iterations: int) -> list[float]:
    """Create from a full pool, then run `echo`: the time to its output, in ms."""
    samples = []
    with (
        httpx.Client(base_url=server.url, timeout=60) as root,
        httpx.Client(base_url=server.url + "/api/v1", timeout=60) as api,
    ):
        for _ in range(iterations):
            wait_pool(root, 2)
            started = time.perf_counter()
            sandbox = api.post("/sandboxes", json={"template": TEMPLATE}).json()
            run = api.post(f"/sandboxes/{sandbox['id']}/processes/run", json={"command": "echo", "args": ["x"]})
            samples.append((time.perf_counter() - started) * 1000)
            assert run.json()["stdout"] == "x\n", run.text
            api.delete(f"/sandboxes/{sandbox['id']}", params={"force": "true"})
    return samples


def claim_writes() -> int:
    with fake_cluster(agent_sandbox=True) as cluster:
        server = cluster.server(extra=["--k8s-mode=agent-sandbox", "--k8s-warm-pool=1"])
        try:
            deadline = time.monotonic() + 60
            while (
                time.monotonic() < deadline
                and sum(
                    1
                    for p in cluster.pods()
                    if p.get("status", {}).get("phase") == "Running"  # type: ignore[union-attr]
                )
                < 2
            ):
                time.sleep(0.05)
            before = sum(c for w, c in cluster.api.requests.items() if w.split()[0] in ("create", "update", "delete"))
            with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as api:
                created = api.post("/sandboxes", json={"template": TEMPLATE})
                assert created.status_code == 201, created.text
            after = sum(c for w, c in cluster.api.requests.items() if w.split()[0] in ("create", "update", "delete"))
            return after - before
        finally:
            stop_server(server)


def restart_adoption(cluster: FakeCluster, count: int) -> dict[str, float]:
    first = cluster.server()
    with httpx.Client(base_url=first.url + "/api/v1", timeout=120) as api:

        def create(_: int) -> str:
            response = api.post("/sandboxes", json={"template": TEMPLATE})
            assert response.status_code == 201, response.text
            return str(response.json()["id"])

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(create, range(count)))
    stop_server(first)
    lists, watches = cluster.api.requests["list pods"], cluster.api.requests["watch pods"]
    started = time.perf_counter()
    second = cluster.server(data_dir=first.data_dir)
    ready = time.perf_counter() - started
    try:
        with httpx.Client(base_url=second.url + "/api/v1", timeout=120) as api:
            states = [api.get(f"/sandboxes/{i}").json()["state"] for i in ids]
            probe = api.post(f"/sandboxes/{ids[-1]}/processes/run", json={"command": "echo", "args": ["adopted"]})
            assert probe.json()["stdout"] == "adopted\n"
            for sandbox_id in ids:
                api.delete(f"/sandboxes/{sandbox_id}", params={"force": "true"})
    finally:
        stop_server(second)
    return {
        "sandboxes": count,
        "adopted": states.count("running"),
        "lists": cluster.api.requests["list pods"] - lists,
        "watches": cluster.api.requests["watch pods"] - watches,
        "restart_to_healthy_s": ready,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--sandboxes", type=int, default=200)
    args = parser.parse_args()
    rows = []
    local = start_server(data_root("ws-bench-local-") / "data", extra=["--pool-size=2"])
    try:
        local_ms = warm_first_command(local, args.iterations)
    finally:
        stop_server(local)
    with fake_cluster() as cluster:
        k8s = cluster.server(pool_size=2)
        try:
            k8s_ms = warm_first_command(k8s, args.iterations)
        finally:
            stop_server(k8s)
        delta = statistics.median(k8s_ms) - statistics.median(local_ms)
        rows.append(
            "| k8s_warm_create_first_command "
            f"| p50 {statistics.median(k8s_ms):.2f} ms, p90 {percentile(k8s_ms, 0.9):.2f} ms "
            f"| local p50 {statistics.median(local_ms):.2f} ms, p90 {percentile(local_ms, 0.9):.2f} ms "
            f"| {delta:+.2f} ms (target within 2 ms: {'PASS' if delta <= 2 else 'MISS'}) |"
        )
        adoption = restart_adoption(cluster, args.sandboxes)
    writes = claim_writes()
    verdict = "PASS" if writes == 1 else "MISS"
    rows.append(f"| k8s_claim_api_writes | {writes} | pods mode cold create: 2 (pod + secret) | target 1: {verdict} |")
    ok = adoption["adopted"] == adoption["sandboxes"] and adoption["lists"] == 1 and adoption["watches"] == 1
    rows.append(
        f"| k8s_restart_adoption | {adoption['adopted']:.0f}/{adoption['sandboxes']:.0f} adopted, "
        f"{adoption['lists']:.0f} list, {adoption['watches']:.0f} watch "
        f"| restart to healthy {adoption['restart_to_healthy_s']:.2f} s "
        f"| target 200/200 with one list + one watch: {'PASS' if ok else 'MISS'} |"
    )
    text = (
        "# Kubernetes runtime (tier 2: fake API server + fake kubelet running the real agent)\n\n"
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.iterations} iterations, "
        f"{args.sandboxes} sandboxes for the restart; load average at the end "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (the baseline ran in the same minutes, "
        "under the same load).\n\n"
        "| Metric | Kubernetes runtime | Baseline (same run) | Result |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
