"""Lifecycle faults: server crashes while sandboxes are paused or stopped, and in the middle
of a pause, stop, start or fork. Every sandbox must end in a true state (what the API says
is what the host holds) and no file may be lost."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from tests.e2e.reliability.reliability_support import Harness, assert_running_means_usable, create
from tests.support.lifecycle import (
    counter_lines,
    digest,
    http_shell,
    make_tree,
    sandbox_cgroup,
    start_counter,
)

TRUE_STATES = {"running", "paused", "stopped", "error"}


def without_counter(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "counter.log" not in line)


def post(c: httpx.Client, sandbox_id: str, operation: str, **params: str) -> dict[str, Any]:
    response = c.post(f"/sandboxes/{sandbox_id}/{operation}", params=params)
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def freezer_state(h: Harness, sandbox_id: str) -> str:
    path = sandbox_cgroup(h.pid, "freezer", sandbox_id) / "workload" / "freezer.state"
    return path.read_text().strip() if path.exists() else "THAWED"


def test_a_restart_keeps_paused_and_stopped_sandboxes_as_they_were() -> None:
    with Harness("lifecycle-restart") as h:
        h.start()
        with h.client() as c:
            paused, stopped, running = (create(c)["id"] for _ in range(3))
            digests = {}
            for sandbox_id in (paused, stopped, running):
                sh = http_shell(c, sandbox_id)
                make_tree(sh)
                digests[sandbox_id] = digest(sh)
            counter = start_counter(http_shell(c, paused))
            time.sleep(0.3)
            post(c, paused, "pause")
            frozen_output = c.get(f"/sandboxes/{paused}/files", params={"path": "/workspace/counter.log"}).content
            post(c, stopped, "stop")

        for _ in range(2):  # twice: a second restart must not lose anything either
            h.crash()
            h.start()
            with h.client() as c:
                states = {s["id"]: s["state"] for s in c.get("/sandboxes").json()["sandboxes"]}
                assert states == {paused: "paused", stopped: "stopped", running: "running"}, states
                assert freezer_state(h, paused) == "FROZEN"
                still = c.get(f"/sandboxes/{paused}/files", params={"path": "/workspace/counter.log"}).content
                assert still == frozen_output, "a paused sandbox ran while the server was down"
                assert assert_running_means_usable(c) == [running]

        with h.client() as c:
            post(c, paused, "resume")
            time.sleep(0.3)
            sh = http_shell(c, paused)
            lines = counter_lines(sh)
            assert len(lines) > len(frozen_output.split()) and lines == list(range(len(lines)))
            assert sh(f"kill -0 {counter} && echo same-pid").strip() == "same-pid"
            assert without_counter(digest(sh)) == without_counter(digests[paused])
            post(c, stopped, "start")
            assert digest(http_shell(c, stopped)) == digests[stopped]
            assert digest(http_shell(c, running)) == digests[running]
            for sandbox_id in (paused, stopped, running):
                assert c.delete(f"/sandboxes/{sandbox_id}", params={"force": "true"}).status_code == 204
        h.assert_data_dir_empty()


@pytest.mark.parametrize("delay", [0.02, 0.12])
def test_a_crash_in_the_middle_of_operations_leaves_true_states_and_every_file(delay: float) -> None:
    with Harness("lifecycle-crash") as h:
        h.start()
        with h.client() as c:
            to_stop, to_start, to_pause, to_fork = (create(c)["id"] for _ in range(4))
            digests = {}
            for sandbox_id in (to_stop, to_start, to_pause, to_fork):
                sh = http_shell(c, sandbox_id)
                make_tree(sh)
                if sandbox_id == to_fork:  # a copy that takes a while
                    sh("head -c 60M /dev/urandom > /workspace/big.bin")
                digests[sandbox_id] = digest(sh)
            post(c, to_start, "stop", force="true")

        def call(sandbox_id: str, operation: str) -> None:
            try:
                httpx.post(f"{h.api_url}/sandboxes/{sandbox_id}/{operation}", timeout=30)
            except httpx.HTTPError:
                pass  # the server died under it: that is the point

        calls = [(to_stop, "stop"), (to_start, "start"), (to_pause, "pause"), (to_fork, "fork")]
        threads = [threading.Thread(target=call, args=item) for item in calls]
        for thread in threads:
            thread.start()
        time.sleep(delay)
        h.crash()
        for thread in threads:
            thread.join(30)

        h.start()
        with h.client() as c:
            listed = {s["id"]: s for s in c.get("/sandboxes").json()["sandboxes"]}
            assert {s["state"] for s in listed.values()} <= TRUE_STATES, listed
            assert_running_means_usable(c)
            for sandbox_id in (to_stop, to_start, to_pause, to_fork):
                state = listed[sandbox_id]["state"]
                assert state != "error", listed[sandbox_id]
                if state == "paused":
                    assert freezer_state(h, sandbox_id) == "FROZEN"
                    post(c, sandbox_id, "resume")
                elif state == "stopped":
                    assert not sandbox_cgroup(h.pid, "memory", sandbox_id).exists()
                    post(c, sandbox_id, "start")
                else:
                    assert freezer_state(h, sandbox_id) == "THAWED"  # a fork's freeze was undone
                assert digest(http_shell(c, sandbox_id)) == digests[sandbox_id], sandbox_id
            forks = set(listed) - {to_stop, to_start, to_pause, to_fork}
            assert len(forks) <= 1
            for fork in forks:
                if listed[fork]["state"] == "running":  # it completed before the crash
                    assert digest(http_shell(c, fork)) == digests[to_fork]
                else:
                    assert listed[fork]["state"] == "error", listed[fork]
                    left = h.leftovers([fork])
                    assert not any(left.values()), left
            for sandbox_id in listed:
                assert c.delete(f"/sandboxes/{sandbox_id}", params={"force": "true"}).status_code == 204
        h.assert_data_dir_empty()
