"""What reserving a sandbox's disk costs (store/disk_space.py): cold creates and deletes on
a server that accounts every disk's promise (the default) and on one that allocates every
disk in full (`--disk-preallocate`), each beside one that keeps disks sparse and admits
everything (`--disk-overcommit`), interleaved in the same run; for the default disk size
and for a 4 GiB one (allocating takes longer the larger the disk)."""

from __future__ import annotations

import time

from benchmarks.client import Api
from benchmarks.config import Config
from benchmarks.measure import latency
from benchmarks.report import Metric
from benchmarks.server import Server
from benchmarks.stats import percentile

DISK = "Disk reservation: cold create and delete, reserved beside sparse"
# The servers compared: flags, and how the rows name them.
MODES = {
    "accounted": ([], "accounted (default)"),
    "preallocated": (["--disk-preallocate"], "allocated in full (--disk-preallocate)"),
    "sparse": (["--disk-overcommit"], "sparse (--disk-overcommit; same run, interleaved)"),
}
SIZES = {"default": None, "4g": 4096}


def reservation_cost(servers: dict[str, Server], cfg: Config) -> list[Metric]:
    samples: dict[str, list[float]] = {}
    apis = {mode: Api(server.url) for mode, server in servers.items()}
    try:
        for size_name, disk_mb in SIZES.items():
            params = {} if disk_mb is None else {"disk_mb": disk_mb}
            order = list(servers)
            for i in range(cfg.lifecycle_warmup + cfg.lifecycle_iterations):
                for mode in order[i % len(order) :] + order[: i % len(order)]:  # none always goes first
                    api, server = apis[mode], servers[mode]
                    t0 = time.perf_counter()
                    sandbox = api.create(**params)
                    t1 = time.perf_counter()
                    server.created.add(str(sandbox["id"]))
                    api.delete(sandbox["id"])
                    t2 = time.perf_counter()
                    server.created.discard(str(sandbox["id"]))
                    if i >= cfg.lifecycle_warmup:
                        samples.setdefault(f"{size_name}.create.{mode}", []).append(t1 - t0)
                        samples.setdefault(f"{size_name}.delete.{mode}", []).append(t2 - t1)
    finally:
        for api in apis.values():
            api.close()
    metrics: list[Metric] = []
    for size_name, disk_mb in SIZES.items():
        size = "the default disk (1 GiB)" if disk_mb is None else f"a {disk_mb // 1024} GiB disk"
        for phase in ("create", "delete"):
            key = f"disk.{size_name}.{phase}"
            sparse_samples = samples[f"{size_name}.{phase}.sparse"]
            metrics.append(
                latency(
                    f"{key}.sparse", DISK, f"cold {phase}, {size}, {MODES['sparse'][1]}", sparse_samples, short="sparse"
                )
            )
            for mode in ("accounted", "preallocated"):
                mode_samples = samples[f"{size_name}.{phase}.{mode}"]
                metrics += [
                    latency(
                        f"{key}.{mode}",
                        DISK,
                        f"cold {phase}, {size}, {MODES[mode][1]}",
                        mode_samples,
                        baselines=(f"{key}.sparse",),
                    ),
                    Metric(
                        key=f"{key}.{mode}.added",
                        section=DISK,
                        label=f"reserving ({mode}) added to a cold {phase}, {size}: p50 difference",
                        unit="ms",
                        value=(percentile(mode_samples, 50) - percentile(sparse_samples, 50)) * 1000,
                        note=f"p50 {mode} minus p50 sparse",
                    ),
                ]
    return metrics
