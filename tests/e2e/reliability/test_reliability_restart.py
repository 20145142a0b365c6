"""Server crash (kill -9) and restart on the same data dir.

Guarantees under test: sandboxes outlive the server and are re-adopted by the next one
with their files, processes and settings intact; a sandbox whose agent did not survive is
`error` with an `error_message` saying so and holds no host resources; a create or delete
cut short by the crash is finished or reported on restart; warm-pool sandboxes of the dead
server are reclaimed; nothing is ever reported running that does not answer.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from typing import Any

import httpx

from tests.e2e.reliability.reliability_support import (
    Harness,
    assert_running_means_usable,
    bundle_ids,
    create,
    envelope,
    metric_samples,
    pid_alive,
    ps_commands,
    run,
    runc_status,
    sh,
    sse_events,
    wait_pool_full,
    wait_until,
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _states(client: httpx.Client) -> dict[str, dict[str, Any]]:
    response = client.get("/sandboxes")
    assert response.status_code == 200, response.text
    return {s["id"]: s for s in response.json()["sandboxes"]}


def test_crash_restart_readopts_live_sandboxes_and_reports_dead_ones() -> None:
    with Harness("crash") as h:
        h.start(pool_size=1)
        payload = os.urandom(256 * 1024)
        with h.client() as c:
            survivor = create(c, name="survivor", metadata={"role": "survivor"}, env={"GREETING": "hello"})["id"]
            killed = create(c)["id"]  # its agent is kill -9ed while the server is down
            frozen = create(c)["id"]  # its agent is SIGSTOPped while the server is down
            put = c.put(f"/sandboxes/{survivor}/files", params={"path": "/workspace/data/keep.bin"}, content=payload)
            assert put.status_code == 200, put.text
            sh(c, survivor, "sleep 600 >/dev/null 2>&1 &")  # detached from any client
            wait_pool_full(h, 1)  # one warm sandbox per template (two templates)
        warm = set(bundle_ids(h.data_dir)) - {survivor, killed, frozen}
        assert len(warm) == 2

        h.crash()
        for sandbox_id in (survivor, killed, frozen, *warm):
            assert runc_status(h.data_dir, sandbox_id) == "running", f"{sandbox_id} did not outlive the server"
        dead_pid = h.init_pid(killed)
        os.kill(dead_pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(dead_pid), 5, what="the killed agent to exit")
        os.kill(h.init_pid(frozen), signal.SIGSTOP)

        h.start(pool_size=0)
        with h.client() as c:
            states = _states(c)
            # The survivor: running, usable, same settings, same files, same processes.
            record = states[survivor]
            assert record["state"] == "running" and record["error_message"] is None, record
            assert (record["name"], record["metadata"]) == ("survivor", {"role": "survivor"})
            assert sh(c, survivor, 'echo "$GREETING"') == "hello\n"
            download = c.get(f"/sandboxes/{survivor}/files", params={"path": "/workspace/data/keep.bin"})
            assert download.status_code == 200 and _sha(download.content) == _sha(payload)
            assert "sleep 600" in ps_commands(c, survivor), "a process of the sandbox died with the server"
            with c.stream(
                "POST",
                f"/sandboxes/{survivor}/processes/stream",
                json={"command": "sh", "args": ["-c", "echo streamed"]},
            ) as response:
                assert response.status_code == 200
                events = list(sse_events(response.iter_lines()))
            assert events[0][0] == "start" and events[-1] == ("exit", {"code": 0})
            assert "".join(d["data"] for e, d in events if e == "stdout") == "streamed\n"

            # The frozen agent (it cannot answer, its init is alive): reported, never stopped
            # or deleted by recovery; its processes and files are kept.
            record = states[frozen]
            assert record["state"] == "error" and "init is alive" in record["error_message"], record
            assert h.leftovers([frozen])["processes"], "recovery killed a live sandbox's processes"
            os.kill(h.init_pid(frozen), signal.SIGCONT)
            # The killed agent: its processes are gone, its files kept: stopped, saying why,
            # and startable again.
            for lost in (killed,):
                record = states[lost]
                assert record["state"] == "stopped", record
                message = (record["error_message"] or "").lower()
                assert "restart" in message and "files are kept" in message, record
                response = c.post(f"/sandboxes/{lost}/processes/run", json={"command": "true"})
                assert response.status_code == 409 and envelope(response)["code"] == "SANDBOX_NOT_RUNNING"
                left = h.leftovers([lost])
                assert left["bundle dirs"] == [lost]  # its disk
                assert not (left["runc containers"] or left["mounts"] or left["cgroups"] or left["processes"]), left
            started = c.post(f"/sandboxes/{killed}/start")
            assert started.status_code == 200 and started.json()["state"] == "running", started.text
            assert sh(c, killed, "echo alive") == "alive\n"

            # The dead server's warm sandboxes were never handed out: reclaimed, not adopted.
            assert not warm & set(states)
            h.assert_no_leftovers(warm)

            assert sorted(assert_running_means_usable(c)) == sorted([survivor, killed])
            samples = metric_samples(httpx.get(h.url + "/metrics").text)
            assert samples[("workspace_sandboxes", (("state", "running"),))] == 2
            assert samples[("workspace_sandboxes", (("state", "stopped"),))] == 0
            assert samples[("workspace_sandboxes", (("state", "error"),))] == 1

            for sandbox_id in (survivor, killed, frozen):
                assert c.delete(f"/sandboxes/{sandbox_id}", params={"force": "true"}).status_code == 204
        h.assert_data_dir_empty()


def test_a_readopted_sandbox_survives_a_second_crash() -> None:
    with Harness("crash-twice") as h:
        h.start()
        with h.client() as c:
            sandbox_id = create(c)["id"]
            sh(c, sandbox_id, "echo one > /workspace/log")
        for round_ in ("two", "three"):
            h.crash()
            h.start()
            with h.client() as c:
                assert c.get(f"/sandboxes/{sandbox_id}").json()["state"] == "running"
                sh(c, sandbox_id, f"echo {round_} >> /workspace/log")
        with h.client() as c:
            assert sh(c, sandbox_id, "cat /workspace/log") == "one\ntwo\nthree\n"
            assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
        h.assert_data_dir_empty()


def test_crash_while_creating_reports_error_and_leaves_nothing() -> None:
    with Harness("crash-create") as h:
        h.start()
        outcome: dict[str, Any] = {}

        def create_in_background() -> None:
            try:
                outcome["response"] = httpx.post(h.api_url + "/sandboxes", json={}, timeout=30)
            except httpx.HTTPError as exc:
                outcome["error"] = exc

        thread = threading.Thread(target=create_in_background)
        thread.start()
        try:
            # The record is stored (state starting) before the bundle dir is made.
            new = wait_until(lambda: set(bundle_ids(h.data_dir)), 10, interval=0.001, what="the bundle dir")
            h.crash()
        finally:
            thread.join(30)
        assert "response" not in outcome, f"the create finished before the crash: {outcome}"
        (sandbox_id,) = new

        h.start()
        with h.client() as c:
            record = c.get(f"/sandboxes/{sandbox_id}").json()
            assert record["state"] == "error", record
            assert "restart" in (record["error_message"] or "").lower(), record
            assert assert_running_means_usable(c) == []
            h.assert_no_leftovers([sandbox_id])
            assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
            assert c.get(f"/sandboxes/{sandbox_id}").status_code == 404
            # The server still creates sandboxes normally afterwards.
            fresh = create(c)["id"]
            assert run(c, fresh, "echo", "ok")["stdout"] == "ok\n"
            assert c.delete(f"/sandboxes/{fresh}").status_code == 204
        h.assert_data_dir_empty()


def test_crash_while_deleting_finishes_the_delete_on_restart() -> None:
    with Harness("crash-delete") as h:
        h.start()
        with h.client() as c:
            sandbox_id = create(c)["id"]
        stream_open = threading.Event()

        def stubborn_stream() -> None:
            # A command that ignores SIGTERM keeps a graceful delete in `deleting` for its grace.
            body = {"command": "sh", "args": ["-c", "trap '' TERM; while :; do sleep 0.2; done"]}
            try:
                with httpx.stream(
                    "POST", h.api_url + f"/sandboxes/{sandbox_id}/processes/stream", json=body, timeout=30
                ) as response:
                    for line in response.iter_lines():
                        if line.startswith("event: start"):
                            stream_open.set()
            except httpx.HTTPError:
                pass

        def delete() -> None:
            try:
                httpx.delete(h.api_url + f"/sandboxes/{sandbox_id}", timeout=30)
            except httpx.HTTPError:
                pass

        threads = [threading.Thread(target=stubborn_stream), threading.Thread(target=delete)]
        threads[0].start()
        try:
            assert stream_open.wait(10)
            threads[1].start()
            with h.client() as c:
                wait_until(
                    lambda: c.get(f"/sandboxes/{sandbox_id}").json()["state"] == "deleting",
                    5,
                    interval=0.01,
                    what="the delete to begin",
                )
            h.crash()
        finally:
            for thread in threads:
                if thread.ident is not None:
                    thread.join(30)

        h.start()
        with h.client() as c:
            assert c.get(f"/sandboxes/{sandbox_id}").status_code == 404
            assert assert_running_means_usable(c) == []
        h.assert_data_dir_empty()
