"""Pure parts of the Kubernetes runtime: what a pod's status says about its sandbox, the
label-value and name helpers, and the rate limiter's Retry-After handling."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from workspace_server.runtimes.kubernetes import labels, podstate
from workspace_server.runtimes.kubernetes.ratelimit import MAX_RETRY_AFTER, TokenBucket, retry_after_seconds


def pod(status: dict[str, Any], **metadata: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "sbx-1", "uid": "u", "labels": {labels.SANDBOX_ID: "sbx-1"}, **metadata},
        "status": status,
    }


RUNNING = {
    "phase": "Running",
    "podIP": "10.0.0.7",
    "containerStatuses": [{"name": "sandbox", "state": {"running": {}}}],
}


def test_a_running_pod_is_reachable() -> None:
    view = podstate.view(pod(RUNNING, creationTimestamp="2026-01-01T00:00:00Z"))
    assert view.reachable and view.failure is None and view.pod_ip == "10.0.0.7" and view.sandbox_id == "sbx-1"
    assert view.created == 1767225600.0


@pytest.mark.parametrize(
    ("status", "words"),
    [
        ({"phase": "Failed", "reason": "Evicted", "message": "low on memory"}, "evicted by the kubelet: low on memory"),
        (
            {
                **RUNNING,
                "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "DeletionByTaintManager"}],
            },
            "node was lost",
        ),
        (
            {
                **RUNNING,
                "conditions": [{"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler"}],
            },
            "preempted",
        ),
        (
            {
                "phase": "Failed",
                "containerStatuses": [{"name": "sandbox", "state": {"terminated": {"reason": "OOMKilled"}}}],
            },
            "OOM-killed",
        ),
        (
            {
                "phase": "Pending",
                "containerStatuses": [{"name": "sandbox", "state": {"waiting": {"reason": "ImagePullBackOff"}}}],
            },
            "cannot be pulled",
        ),
        ({"phase": "Unknown"}, "node lost"),
        (
            {
                "phase": "Pending",
                "initContainerStatuses": [{"name": "install-agent", "state": {"terminated": {"exitCode": 1}}}],
            },
            "agent could not be installed",
        ),
    ],
)
def test_failures_say_why(status: dict[str, Any], words: str) -> None:
    view = podstate.view(pod(status))
    assert view.failure is not None and words in view.failure
    assert not view.reachable or view.failure


def test_a_pending_pod_is_neither_failed_nor_reachable() -> None:
    view = podstate.view(pod({"phase": "Pending"}))
    assert view.failure is None and not view.reachable


def test_a_deleting_pod_is_not_reachable() -> None:
    assert not podstate.view(pod(RUNNING, deletionTimestamp="2026-01-01T00:00:00Z")).reachable


def test_oom_kills_count_current_and_last_state() -> None:
    status = {
        "phase": "Running",
        "containerStatuses": [
            {"name": "sandbox", "state": {"running": {}}, "lastState": {"terminated": {"reason": "OOMKilled"}}}
        ],
    }
    assert podstate.view(pod(status)).oom_kills == 1


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "0.5"}, 0.5),
        ({}, 1.0),
        ({"Retry-After": "soon"}, 1.0),
        ({"Retry-After": "99999"}, MAX_RETRY_AFTER),
        ({"Retry-After": "-4"}, 0.0),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float) -> None:
    assert retry_after_seconds(headers) == seconds


async def test_the_token_bucket_allows_a_burst_then_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(qps=10, burst=3, clock=lambda: now[0])
    for _ in range(3):
        await bucket.acquire()
    assert bucket.waited == 0
    sleeps: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds
        await real_sleep(0)

    asyncio.sleep = fake_sleep  # type: ignore[assignment]
    try:
        await bucket.acquire()
    finally:
        asyncio.sleep = real_sleep
    assert sleeps == [pytest.approx(0.1)]


@pytest.mark.parametrize("text", ["workspace-test:latest", "a/b", "x" * 100, "Ünïcode", "-lead", "trail-", ""])
def test_label_values_are_always_valid(text: str) -> None:
    value = labels.label_value(text)
    assert labels.is_label_value(value)
    assert labels.is_dns_label(labels.dns_label(text or "x"))


def test_label_keys() -> None:
    assert labels.is_label_key("workspace.dev/sandbox-id") and labels.is_label_key("app")
    assert not labels.is_label_key("Bad_Prefix/x") and not labels.is_label_key("x" * 64)
