"""What reserving a sandbox's disk costs (store/disk_space.py): cold creates and deletes on
a server that allocates every disk in full (the default) beside one that keeps disks sparse
(`--disk-overcommit`), interleaved one for one in the same run; for the default disk size
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
OVERCOMMIT = ["--disk-overcommit"]
SIZES = {"default": None, "4g": 4096}


def reservation_cost(reserved: Server, sparse: Server, cfg: Config) -> list[Metric]:
    samples: dict[str, list[float]] = {}
    with Api(reserved.url) as with_reserve, Api(sparse.url) as without:
        for size_name, disk_mb in SIZES.items():
            params = {} if disk_mb is None else {"disk_mb": disk_mb}
            pair = [("reserved", with_reserve, reserved), ("sparse", without, sparse)]
            for i in range(cfg.lifecycle_warmup + cfg.lifecycle_iterations):
                for mode, api, server in pair if i % 2 else pair[::-1]:  # neither always goes first
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
    metrics: list[Metric] = []
    for size_name, disk_mb in SIZES.items():
        size = "the default disk (1 GiB)" if disk_mb is None else f"a {disk_mb // 1024} GiB disk"
        for phase in ("create", "delete"):
            key = f"disk.{size_name}.{phase}"
            reserved_samples = samples[f"{size_name}.{phase}.reserved"]
            sparse_samples = samples[f"{size_name}.{phase}.sparse"]
            metrics += [
                latency(
                    f"{key}.reserved",
                    DISK,
                    f"cold {phase}, {size}, reserved in full (default)",
                    reserved_samples,
                    baselines=(f"{key}.sparse",),
                ),
                latency(
                    f"{key}.sparse",
                    DISK,
                    f"cold {phase}, {size}, sparse (--disk-overcommit; same run, interleaved)",
                    sparse_samples,
                    short="sparse",
                ),
                Metric(
                    key=f"{key}.added",
                    section=DISK,
                    label=f"reserving added to a cold {phase}, {size}: p50 difference",
                    unit="ms",
                    value=(percentile(reserved_samples, 50) - percentile(sparse_samples, 50)) * 1000,
                    note="p50 reserved minus p50 sparse",
                ),
            ]
    return metrics
