"""Lifecycle operations on an existing sandbox: pause, resume, stop, start → first command,
fork of a sandbox with 100 MB of changed files, and the memory a stopped sandbox holds.

Runs on the cold server (--pool-size 0), so a start is compared with a cold create → first
command measured in the same loop, one for one: both boot runc and connect the agent; the
start skips the disk's copy and formatting, and mounts the kept image instead."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from benchmarks.client import Api, _check
from benchmarks.config import Config
from benchmarks.measure import latency
from benchmarks.report import Metric
from benchmarks.server import Server

LIFECYCLE_OPS = "Lifecycle operations: pause, resume, stop, start, fork"
API = "/api/v1"
FORK_CHANGED_MB = 100
CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "freezer")
CGROUP_ROOT = Path("/sys/fs/cgroup")


def post(api: Api, sandbox_id: str, operation: str, **params: str) -> dict[str, Any]:
    body: dict[str, Any] = _check(api.http.post(f"{API}/sandboxes/{sandbox_id}/{operation}", params=params)).json()
    return body


def stopped_memory(server: Server, sandbox_id: str) -> int:
    """Bytes charged to the sandbox's memory cgroup: 0 when none of its cgroups is left
    (the stop removed them); -1 if only another controller's was left behind."""
    relative = f"{server.memory_cgroup.rstrip('/')}/workspace/{sandbox_id}".lstrip("/")
    memory = CGROUP_ROOT / "memory" / relative
    if memory.exists():
        return int((memory / "memory.usage_in_bytes").read_text())
    return -1 if any((CGROUP_ROOT / c / relative).exists() for c in CONTROLLERS) else 0


def lifecycle_ops(server: Server, cfg: Config) -> list[Metric]:
    rounds = cfg.lifecycle_iterations
    samples: dict[str, list[float]] = {
        name: [] for name in ("pause", "resume", "stop", "start_to_first", "cold_to_first", "fork")
    }
    memory: list[int] = []
    with Api(server.url) as api:
        sandbox_id = str(api.create()["id"])
        server.created.add(sandbox_id)
        try:
            api.run(sandbox_id, "bash", "-c", "nohup sleep 100000 >/dev/null 2>&1 &")
            for i in range(cfg.lifecycle_warmup + rounds):
                t0 = time.perf_counter()
                post(api, sandbox_id, "pause")
                t1 = time.perf_counter()
                post(api, sandbox_id, "resume")
                t2 = time.perf_counter()
                if i >= cfg.lifecycle_warmup:
                    samples["pause"].append(t1 - t0)
                    samples["resume"].append(t2 - t1)
            for i in range(cfg.lifecycle_warmup + rounds):
                t0 = time.perf_counter()
                post(api, sandbox_id, "stop", force="true")
                t1 = time.perf_counter()
                memory.append(stopped_memory(server, sandbox_id))
                t2 = time.perf_counter()
                post(api, sandbox_id, "start")
                api.run(sandbox_id, "true")
                t3 = time.perf_counter()
                cold = str(api.create()["id"])
                server.created.add(cold)
                api.run(cold, "true")
                t4 = time.perf_counter()
                api.delete(cold)
                server.created.discard(cold)
                if i >= cfg.lifecycle_warmup:
                    samples["stop"].append(t1 - t0)
                    samples["start_to_first"].append(t3 - t2)
                    samples["cold_to_first"].append(t4 - t3)
            api.run(sandbox_id, "bash", "-c", f"head -c {FORK_CHANGED_MB}M /dev/urandom > /workspace/changed.bin")
            for _ in range(max(3, rounds // 5)):
                t0 = time.perf_counter()
                fork = _check(api.http.post(f"{API}/sandboxes/{sandbox_id}/fork", json={})).json()
                t1 = time.perf_counter()
                server.created.add(str(fork["id"]))
                api.delete(str(fork["id"]))
                server.created.discard(str(fork["id"]))
                samples["fork"].append(t1 - t0)
        finally:
            api.delete(sandbox_id)
            server.created.discard(sandbox_id)
    cold_p50 = sorted(samples["cold_to_first"])[len(samples["cold_to_first"]) // 2]
    start_p50 = sorted(samples["start_to_first"])[len(samples["start_to_first"]) // 2]
    prefix = "lifecycle_ops"
    return [
        latency(f"{prefix}.pause", LIFECYCLE_OPS, "pause (a sandbox with a background process)", samples["pause"]),
        latency(f"{prefix}.resume", LIFECYCLE_OPS, "resume", samples["resume"]),
        latency(f"{prefix}.stop", LIFECYCLE_OPS, "stop, force=true", samples["stop"]),
        latency(
            f"{prefix}.start_to_first",
            LIFECYCLE_OPS,
            "start of a stopped sandbox → first command finished",
            samples["start_to_first"],
            baselines=(f"{prefix}.cold_to_first",),
        ),
        latency(
            f"{prefix}.cold_to_first",
            LIFECYCLE_OPS,
            "cold create → first command finished (same loop, one for one)",
            samples["cold_to_first"],
            short="cold create",
        ),
        Metric(
            key=f"{prefix}.start_over_cold",
            section=LIFECYCLE_OPS,
            label="start → first command minus cold create → first command (p50s)",
            unit="ms",
            value=(start_p50 - cold_p50) * 1000,
        ),
        latency(
            f"{prefix}.fork",
            LIFECYCLE_OPS,
            f"fork of a sandbox with {FORK_CHANGED_MB} MB of changed files → running",
            samples["fork"],
        ),
        Metric(
            key=f"{prefix}.stopped_memory",
            section=LIFECYCLE_OPS,
            label="memory of a stopped sandbox (its memory cgroup; no cgroup left = 0)",
            unit="bytes",
            value=float(max(memory)),
            note="-1 would mean another controller's cgroup of it was left behind",
        ),
    ]
