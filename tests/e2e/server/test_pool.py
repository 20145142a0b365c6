"""The warm pool: a create is served by a pre-started sandbox when one fits, the request's
env, name, metadata, timeout and cpu/memory/pids limits are applied when it is claimed, and
no sandbox is ever handed out twice. Which creates the pool served is read from
/metrics (workspace_sandbox_create_seconds_count{source}).

One private server with a pool of one sandbox per template serves the whole module.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.reliability.reliability_support import Harness, create, metric_samples, run, sh, wait_pool_full

MIB = 1024 * 1024
CGROUP_ROOT = Path("/sys/fs/cgroup")
AGENT_RESERVE_MB = 48  # the agent's own memory on top of memory_mb (docs/api.md)


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    with Harness("pool") as h:
        h.start(pool_size=1)
        yield h


@pytest.fixture
def api(harness: Harness) -> Iterator[httpx.Client]:
    wait_pool_full(harness, 1)  # each test starts with a warm sandbox waiting
    with harness.client(timeout=60) as client:
        yield client


def creates_by_source(h: Harness) -> dict[str, float]:
    samples = metric_samples(httpx.get(h.url + "/metrics", timeout=10).text)
    return {
        dict(labels)["source"]: value
        for (name, labels), value in samples.items()
        if name == "workspace_sandbox_create_seconds_count"
    }


def create_counting(h: Harness, client: httpx.Client, **body: Any) -> tuple[dict[str, Any], str]:
    """Create, and say whether the pool or a cold start served it."""
    before = creates_by_source(h)
    sandbox = create(client, **body)
    after = creates_by_source(h)
    served = [source for source in after if after[source] != before.get(source, 0)]
    assert len(served) == 1, (before, after)
    return sandbox, served[0]


def cgroup_value(h: Harness, controller: str, sandbox_id: str, name: str) -> int:
    return int((CGROUP_ROOT / controller / h.cgroup_parent.lstrip("/") / sandbox_id / name).read_text())


def test_the_request_is_applied_to_a_claimed_sandbox(harness: Harness, api: httpx.Client) -> None:
    sandbox, source = create_counting(
        harness, api, env={"GREETING": "from-the-request"}, name="claimed", metadata={"team": "pool"}, timeout=600
    )
    try:
        assert source == "pool"
        assert (sandbox["name"], sandbox["metadata"], sandbox["timeout"]) == ("claimed", {"team": "pool"}, 600)
        assert sandbox["expires_at"] is not None
        assert sh(api, sandbox["id"], "echo $GREETING").strip() == "from-the-request"
    finally:
        api.delete(f"/sandboxes/{sandbox['id']}", params={"force": "true"})


def test_a_sandbox_is_never_handed_out_twice(harness: Harness, api: httpx.Client) -> None:
    first, source = create_counting(harness, api)
    assert source == "pool"
    sh(api, first["id"], "echo secret > /workspace/left-behind && echo secret > /tmp/left-behind")
    api.delete(f"/sandboxes/{first['id']}", params={"force": "true"})
    wait_pool_full(harness, 1)
    second, source = create_counting(harness, api)
    try:
        assert source == "pool"
        assert second["id"] != first["id"]
        assert sh(api, second["id"], "ls -A /workspace /tmp").split() == ["/tmp:", "/workspace:"]
    finally:
        api.delete(f"/sandboxes/{second['id']}", params={"force": "true"})


def test_other_cpu_memory_and_pids_limits_are_served_by_the_pool_and_enforced(
    harness: Harness, api: httpx.Client
) -> None:
    if not (CGROUP_ROOT / "memory").is_dir():
        pytest.skip("limits change on claim with cgroup v1 only; on v2 such a create starts cold")
    sandbox, source = create_counting(harness, api, cpu=0.5, memory_mb=64, pids=24)
    try:
        assert source == "pool"
        assert (sandbox["cpu"], sandbox["memory_mb"], sandbox["pids"]) == (0.5, 64, 24)
        sandbox_id = sandbox["id"]
        assert cgroup_value(harness, "memory", sandbox_id, "memory.limit_in_bytes") == (64 + AGENT_RESERVE_MB) * MIB
        assert cgroup_value(harness, "memory", sandbox_id, "workload/memory.limit_in_bytes") == 64 * MIB
        assert cgroup_value(harness, "cpu", sandbox_id, "cpu.cfs_quota_us") == 50_000
        assert cgroup_value(harness, "pids", sandbox_id, "pids.max") == 24
        # And the kernel holds the sandbox to them: 128 MiB does not fit in 64 ...
        hog = run(api, sandbox_id, "python3", "-c", "b = bytearray(128 << 20); print('ALLOCATED')", timeout=60)
        assert "ALLOCATED" not in hog["stdout"]
        assert hog["exit_code"] != 0
        # ... and 40 more processes do not fit in 24.
        forks = run(api, sandbox_id, "python3", "-c", FORK_UNTIL_REFUSED, timeout=60)
        assert forks["exit_code"] == 0, forks
        assert 0 < int(forks["stdout"]) < 24
        # The agent, in the sandbox's memory cgroup above the workload's, is untouched.
        assert sh(api, sandbox_id, "echo alive").strip() == "alive"
    finally:
        api.delete(f"/sandboxes/{sandbox['id']}", params={"force": "true"})


FORK_UNTIL_REFUSED = """
import os, signal, time
children = []
for _ in range(40):
    try:
        pid = os.fork()
    except BlockingIOError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    children.append(pid)
print(len(children))
for pid in children:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""


def test_what_a_pool_sandbox_cannot_become_starts_cold(harness: Harness, api: httpx.Client) -> None:
    sandbox, source = create_counting(harness, api, disk_mb=256)
    try:
        assert source == "cold"
        assert sandbox["disk_mb"] == 256
    finally:
        api.delete(f"/sandboxes/{sandbox['id']}", params={"force": "true"})


def test_network_is_attached_to_a_claimed_sandbox(harness: Harness, api: httpx.Client) -> None:
    sandbox, source = create_counting(harness, api, network=True)
    try:
        assert source == "pool" and sandbox["network"] is True
        interfaces = api.post(
            f"/sandboxes/{sandbox['id']}/processes/run", json={"command": "cat", "args": ["/proc/net/dev"]}
        ).json()["stdout"]
        assert "tap0" in interfaces  # slirp4netns's device, attached at the claim
    finally:
        api.delete(f"/sandboxes/{sandbox['id']}", params={"force": "true"})
    wait_pool_full(harness, 1)
    plain, source = create_counting(harness, api)
    try:  # the pool's other sandboxes stay without network
        assert source == "pool" and plain["network"] is False
        interfaces = api.post(
            f"/sandboxes/{plain['id']}/processes/run", json={"command": "cat", "args": ["/proc/net/dev"]}
        ).json()["stdout"]
        assert "tap0" not in interfaces
    finally:
        api.delete(f"/sandboxes/{plain['id']}", params={"force": "true"})
