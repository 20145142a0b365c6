"""Observability: /metrics and the structured logs.

Guarantees under test: GET /metrics is valid Prometheus text carrying
workspace_sandboxes{state}, workspace_sandbox_create_seconds{source},
workspace_process_run_seconds, workspace_pool_size{template} and
workspace_agent_disconnects_total, with values that match what the API reports; every log
line carries request_id= and sandbox_id= fields, request lines carry the caller's
X-Request-Id and the sandbox of the path, and lines about one sandbox name it.
"""

from __future__ import annotations

import os
import secrets
import signal
import time

import httpx

from tests.e2e.reliability.reliability_support import (
    Harness,
    create,
    metric_samples,
    run,
    wait_pool_full,
    wait_until,
)

STATES = ("starting", "running", "paused", "stopping", "stopped", "deleting", "error")
TEMPLATES = ("default", "workspace-test:latest")


def _metrics(h: Harness) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = httpx.get(h.url + "/metrics", timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain"), response.headers
    return metric_samples(response.text)  # raises on anything that is not Prometheus text


def _log_lines(h: Harness) -> list[str]:
    return [line for line in h.log().splitlines() if line.startswith("ts=")]


def test_metrics_are_prometheus_text_and_match_the_api() -> None:
    with Harness("metrics") as h:
        h.start(pool_size=1)
        wait_pool_full(h, 1)
        with h.client() as c:
            pooled = create(c)["id"]  # default limits: handed out from the warm pool
            cold = create(c, memory_mb=256)["id"]  # non-default limits: started cold
            deleted = create(c, memory_mb=256)["id"]
            assert c.delete(f"/sandboxes/{deleted}").status_code == 204
            for _ in range(3):
                run(c, pooled, "true")
            os.kill(h.init_pid(cold), signal.SIGKILL)
            wait_until(
                lambda: c.get(f"/sandboxes/{cold}").json()["state"] == "error",
                5,
                what="the killed sandbox to be reported",
            )
            wait_pool_full(h, 1)
            samples = _metrics(h)
            listed = c.get("/sandboxes").json()["sandboxes"]

        for state in STATES:
            expected = sum(1 for s in listed if s["state"] == state)
            assert samples[("workspace_sandboxes", (("state", state),))] == expected, state
        assert samples[("workspace_sandboxes", (("state", "running"),))] == 1
        assert samples[("workspace_sandboxes", (("state", "error"),))] == 1

        def create_count(source: str) -> float:
            return samples.get(("workspace_sandbox_create_seconds_count", (("source", source),)), 0.0)

        assert create_count("pool") >= 1 and create_count("cold") >= 2, samples
        assert create_count("pool") + create_count("cold") == 3
        assert samples[
            ("workspace_sandbox_create_seconds_bucket", (("le", "+Inf"), ("source", "cold")))
        ] == create_count("cold")
        assert samples[("workspace_sandbox_create_seconds_sum", (("source", "cold"),))] > 0
        assert samples[("workspace_process_run_seconds_count", ())] == 3
        assert samples[("workspace_process_run_seconds_bucket", (("le", "+Inf"),))] == 3
        for template in TEMPLATES:
            assert samples[("workspace_pool_size", (("template", template),))] == 1
        # One agent was lost; a delete is not a disconnect.
        assert samples[("workspace_agent_disconnects_total", ())] == 1


def test_log_lines_carry_request_and_sandbox_ids() -> None:
    with Harness("logs") as h:
        h.start()
        request_id = "rel-" + secrets.token_hex(6)
        with h.client() as c:
            sandbox_id = create(c)["id"]
            os.kill(h.init_pid(sandbox_id), signal.SIGKILL)
            wait_until(
                lambda: c.get(f"/sandboxes/{sandbox_id}").json()["state"] == "error",
                5,
                what="the killed sandbox to be reported",
            )
            # A failing call is logged (5xx); it must carry the caller's request id and the sandbox.
            response = c.post(
                f"/sandboxes/{sandbox_id}/processes/run", json={"command": "true"}, headers={"X-Request-Id": request_id}
            )
            assert response.status_code == 503
            assert response.headers["x-request-id"] == request_id
            generated = c.get("/sandboxes").headers["x-request-id"]
            assert generated and generated != request_id
            assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
        time.sleep(0.2)
        lines = _log_lines(h)
        assert lines, h.log()
        for line in lines:
            assert " request_id=" in line and " sandbox_id=" in line, line
        mine = [line for line in lines if f"request_id={request_id} " in line]
        assert mine, f"no log line carries request_id={request_id}:\n{h.log_tail()}"
        assert all(f"sandbox_id={sandbox_id} " in line for line in mine), mine


def test_sandbox_lifecycle_log_lines_name_their_sandbox() -> None:
    with Harness("logs-lifecycle") as h:
        h.start()
        create_id = "create-" + secrets.token_hex(6)
        with h.client() as c:
            response = c.post("/sandboxes", json={}, headers={"X-Request-Id": create_id})
            assert response.status_code == 201
            lost = response.json()["id"]
            expiring = c.post("/sandboxes", json={"timeout": 1}).json()["id"]
            os.kill(h.init_pid(lost), signal.SIGKILL)
            wait_until(
                lambda: c.get(f"/sandboxes/{lost}").json()["state"] == "error",
                5,
                what="the killed sandbox to be reported",
            )
            wait_until(
                lambda: c.get(f"/sandboxes/{expiring}").status_code == 404,
                10,
                what="the expiring sandbox to be deleted",
            )
        time.sleep(0.2)
        lines = _log_lines(h)
        lost_lines = [line for line in lines if lost in line and "disconnected" in line]
        expiry_lines = [line for line in lines if expiring in line and "timeout" in line]
        assert lost_lines and expiry_lines, h.log_tail()
        for line in lost_lines:
            assert f"sandbox_id={lost} " in line, line
            assert f"request_id={create_id} " not in line, f"a stale request id: {line}"
        for line in expiry_lines:
            assert f"sandbox_id={expiring} " in line, line
