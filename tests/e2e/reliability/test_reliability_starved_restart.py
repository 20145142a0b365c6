"""A restart never destroys a healthy sandbox whose agent is slow to answer.

Guarantee under test: a sandbox whose own processes keep its CPU share busy (a low `cpu`
and busy loops) is re-adopted after a server crash, its processes and files intact; its
agent's hello may take seconds (all agents are greeted in parallel, each with a deadline
that fits a starved agent). One whose init is alive but never answers is reported, not
stopped or deleted (`test_attack_agent_socket.py` covers the silent agent).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.e2e.reliability.reliability_support import Harness, create, pid_alive, sandbox_processes, sh

STARVED = 3
BUSY_LOOPS = 12  # at cpu=0.05 the agent then takes seconds to answer its hello


@pytest.fixture
def harness() -> Iterator[Harness]:
    with Harness("starved-restart") as h:
        h.start()
        yield h


def test_a_restart_readopts_cpu_starved_sandboxes_with_their_processes_and_files(harness: Harness) -> None:
    with harness.client(timeout=60) as client:
        ids = [create(client, cpu=0.05)["id"] for _ in range(STARVED)]
        for sandbox_id in ids:
            sh(client, sandbox_id, "echo kept > /workspace/kept.txt")
            client.post(
                f"/sandboxes/{sandbox_id}/processes/run",
                json={
                    "command": "sh",
                    "args": ["-c", f"for i in $(seq {BUSY_LOOPS}); do (while :; do :; done) & done"],
                },
            )
    busy = {pid for pid, _ in sandbox_processes(ids)}
    harness.crash()
    harness.start()
    with harness.client(timeout=60) as client:
        for sandbox_id in ids:
            state = client.get(f"/sandboxes/{sandbox_id}").json()
            # Re-adopted; or, had its agent missed even the generous deadline, reported with
            # everything kept. Never stopped (its processes killed) nor deleted.
            assert state["state"] == "running" or (
                state["state"] == "error" and "init is alive" in state["error_message"]
            ), state
            kept = harness.data_dir / "sandboxes" / sandbox_id / "rw" / "workspace" / "kept.txt"
            assert kept.read_text() == "kept\n"
        alive = {pid for pid in busy if pid_alive(pid)}
        assert alive == busy, f"processes killed by the restart: {sorted(busy - alive)}"
        for sandbox_id in ids:
            client.delete(f"/sandboxes/{sandbox_id}", params={"force": "true"})
    assert all(not os.path.exists(f"/proc/{pid}") or not pid_alive(pid) for pid in busy)
