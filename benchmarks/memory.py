"""Memory: the warm pool's and idle sandboxes' cost, by RSS and cgroup accounting."""

from __future__ import annotations

import time

from benchmarks.client import Api
from benchmarks.config import Config
from benchmarks.measure import (
    MEMORY,
    create_many,
    delete_many,
)
from benchmarks.procfs import cgroup_memory, rss_bytes
from benchmarks.report import Metric
from benchmarks.server import Server
from benchmarks.stats import MIB


def pool_memory(server: Server) -> list[Metric]:
    """What the warm pool holds while idle: the memory cgroups of the sandboxes the runtime
    runs (a bundle under the data dir) that no client owns (not in GET /sandboxes)."""
    with Api(server.url) as api:
        filled = api.wait_pool(server.pool_size)
        templates = api.templates()
        time.sleep(1.0)
        owned = set(api.list_ids())
    bundles = server.data_dir / "sandboxes"
    warm = sorted(p.name for p in bundles.iterdir() if p.name not in owned) if bundles.is_dir() else []
    parent = server.sandbox_cgroups
    cgroups = [parent / sandbox_id for sandbox_id in warm if (parent / sandbox_id).is_dir()]
    if not cgroups:
        reason = f"no warm sandbox cgroups under {parent}" + ("" if filled else " (pool gauge not seen)")
        return [Metric(key="mem.pool_total", section=MEMORY, label="warm pool, total", unit="MiB", error=reason)]
    usage = [cgroup_memory(d).usage for d in cgroups]
    note = (
        f"{len(cgroups)} warm sandboxes: pool size {server.pool_size} × {len(templates)} templates "
        f"({', '.join(templates)})"
    )
    return [
        Metric(
            key="mem.pool_total",
            section=MEMORY,
            label="warm pool, total (idle)",
            unit="MiB",
            value=sum(usage) / MIB,
            note=note,
        ),
        Metric(
            key="mem.pool_per_sandbox",
            section=MEMORY,
            label="warm pool, per warm sandbox",
            unit="MiB",
            value=sum(usage) / len(usage) / MIB,
        ),
    ]


IDLE_DISK_MB = 64


def idle_memory(server: Server, cfg: Config) -> list[Metric]:
    """N idle sandboxes: their memory cgroups' usage plus what the server grew by."""
    count = cfg.idle_sandboxes
    with Api(server.url) as api:
        api.wait_pool(server.pool_size)
    time.sleep(0.5)
    rss_before = rss_bytes(server.pid)
    t0 = time.perf_counter()
    # Small disks: each is reserved in full on the host's disk (100 of the default 1 GiB may
    # not fit), and an idle sandbox's memory does not depend on its disk's size.
    ids = create_many(server, count, cfg.parallel_setup, disk_mb=IDLE_DISK_MB)
    created_in = time.perf_counter() - t0
    try:
        with Api(server.url) as api:
            api.wait_pool(server.pool_size)
        time.sleep(cfg.idle_settle_seconds)
        memories = [cgroup_memory(server.sandbox_cgroups / sandbox_id) for sandbox_id in ids]
        rss_after = rss_bytes(server.pid)
    finally:
        t1 = time.perf_counter()
        delete_many(server, ids, cfg.parallel_setup)
        deleted_in = time.perf_counter() - t1
    cgroup_total = sum(m.usage for m in memories)
    server_growth = max(0, rss_after - rss_before)
    per_sandbox = (cgroup_total + server_growth) / count
    anon = sum(m.anon for m in memories) / count
    cache = sum(m.file for m in memories) / count
    return [
        Metric(
            key="mem.idle_per_sandbox",
            section=MEMORY,
            label=f"idle memory per sandbox, {count} up",
            unit="MiB",
            value=per_sandbox / MIB,
            note="sandbox memory cgroup usage + server RSS growth, per sandbox",
        ),
        Metric(
            key="mem.idle_cgroup",
            section=MEMORY,
            label="  of which: sandbox memory cgroup (mean)",
            unit="MiB",
            value=cgroup_total / count / MIB,
            note=f"anon {anon / MIB:.1f} MiB, page cache {cache / MIB:.2f} MiB",
        ),
        Metric(
            key="mem.idle_server",
            section=MEMORY,
            label="  of which: server RSS growth per sandbox",
            unit="MiB",
            value=server_growth / count / MIB,
            note=f"server RSS {rss_before / MIB:.0f} → {rss_after / MIB:.0f} MiB",
        ),
        Metric(
            key="mem.bulk_create",
            section=MEMORY,
            label=f"bulk create of {count} sandboxes ({cfg.parallel_setup} parallel clients)",
            unit="sandboxes/s",
            value=count / created_in,
            note=f"delete: {count / deleted_in:.1f} sandboxes/s",
        ),
    ]


# --------------------------------------------------------------------------- runc, podman
