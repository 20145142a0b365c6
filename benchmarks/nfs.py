"""NFS (`workspace serve --nfs`): a 256 MiB file through NFS with a userspace client, beside
the API's own file transfer of the same bytes; and what exporting costs a create, against a
server without NFS, the creates of both interleaved one for one."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.client import Api
from benchmarks.config import Config
from benchmarks.measure import expect, latency
from benchmarks.report import Metric
from benchmarks.server import Server, free_port
from benchmarks.stats import MIB, mb_per_s, percentile
from tests.support.nfs4 import CHUNK, Nfs4Client
from tests.support.nfs_client import libnfs_url

NFS = "NFS (--nfs)"


def nfs_flags() -> list[str]:
    return ["--nfs", "--nfs-listen", f"127.0.0.1:{free_port()}"]


def create_cost(nfs_server: Server, plain: Server, cfg: Config) -> list[Metric]:
    """Warm-pool creates on both servers, alternating, each after its pool refilled."""
    samples: dict[str, list[float]] = {"nfs": [], "plain": []}
    with Api(nfs_server.url) as with_nfs, Api(plain.url) as without:
        for i in range(cfg.lifecycle_warmup + cfg.lifecycle_iterations):
            for name, api, server in (("nfs", with_nfs, nfs_server), ("plain", without, plain)):
                api.wait_pool(server.pool_size)
                t0 = time.perf_counter()
                sandbox = api.create()
                elapsed = time.perf_counter() - t0
                server.created.add(str(sandbox["id"]))
                if name == "nfs":
                    expect(bool(sandbox.get("nfs_url")), f"no nfs_url: {sandbox}")
                api.delete(sandbox["id"])
                server.created.discard(str(sandbox["id"]))
                if i >= cfg.lifecycle_warmup:
                    samples[name].append(elapsed)
    added = (percentile(samples["nfs"], 50) - percentile(samples["plain"], 50)) * 1000
    return [
        latency(
            "nfs.create",
            NFS,
            "create with NFS on (warm pool; exported before it returns)",
            samples["nfs"],
            baselines=("nfs.create_plain",),
        ),
        latency(
            "nfs.create_plain",
            NFS,
            "create with NFS off (warm pool, same run, interleaved)",
            samples["plain"],
            short="NFS off",
        ),
        Metric(
            key="nfs.create_added",
            section=NFS,
            label="export added at sandbox start: p50 difference",
            unit="ms",
            value=added,
            note="create p50 with NFS on minus with NFS off",
        ),
    ]


def transfer(server: Server, cfg: Config) -> list[Metric]:
    size = cfg.large_file_bytes
    data = os.urandom(MIB) * (size // MIB)
    rates: dict[str, list[float]] = {name: [] for name in ("write", "read", "read_libnfs", "api_write", "api_read")}
    label = f"{size // MIB} MiB"
    with Api(server.url, timeout=600) as api, tempfile.TemporaryDirectory() as scratch:
        sandbox = api.create(disk_mb=2 * size // MIB + 256)
        sandbox_id = str(sandbox["id"])
        server.created.add(sandbox_id)
        url = str(sandbox["nfs_url"])
        target = Path(scratch) / "copy.bin"
        try:
            for _ in range(cfg.large_file_reps):
                client, export = Nfs4Client.for_url(url)
                with client:
                    view = memoryview(data)
                    t0 = time.perf_counter()
                    written = client.write_file(
                        f"{export}/nfs.bin", (view[i : i + CHUNK] for i in range(0, size, CHUNK))
                    )
                    rates["write"].append(mb_per_s(written, time.perf_counter() - t0))
                    expect(written == size, f"NFS write: {written} bytes")
                    t0 = time.perf_counter()
                    received = sum(len(piece) for piece in client.read_file(f"{export}/nfs.bin"))
                    rates["read"].append(mb_per_s(received, time.perf_counter() - t0))
                    expect(received == size, f"NFS read: {received} bytes")
                # libnfs's nfs-cp, to a file in /dev/shm-like scratch: a client not ours
                t0 = time.perf_counter()
                done = subprocess.run(
                    ["nfs-cp", libnfs_url(url, "nfs.bin"), str(target)], capture_output=True, timeout=600, check=False
                )
                elapsed = time.perf_counter() - t0
                expect(done.returncode == 0 and target.stat().st_size == size, f"nfs-cp: {done.stderr!r}")
                rates["read_libnfs"].append(mb_per_s(size, elapsed))
                target.unlink()
                t0 = time.perf_counter()
                info = api.write_file(sandbox_id, "/workspace/api.bin", data)
                rates["api_write"].append(mb_per_s(size, time.perf_counter() - t0))
                expect(info.get("size") == size, f"API write: {info}")
                t0 = time.perf_counter()
                received = api.read_file(sandbox_id, "/workspace/api.bin")
                rates["api_read"].append(mb_per_s(received, time.perf_counter() - t0))
                api.remove_file(sandbox_id, "/workspace/api.bin")
        finally:
            api.delete(sandbox_id)
            server.created.discard(sandbox_id)

    def row(key: str, text: str, baselines: tuple[str, ...] = (), short: str = "") -> Metric:
        name = key.removeprefix("nfs.")
        return Metric(
            key=key,
            section=NFS,
            label=text,
            unit="MB/s",
            value=percentile(rates[name], 50),
            baselines=baselines,
            short=short,
            note="reps: " + ", ".join(f"{r:.0f}" for r in rates[name]) + " MB/s",
        )

    return [
        row(
            "nfs.write",
            f"write {label} through NFS (tests/support/nfs4.py, 1 MiB WRITEs, 8 in flight)",
            ("nfs.api_write",),
        ),
        row(
            "nfs.read", f"read {label} through NFS (tests/support/nfs4.py, 1 MiB READs, 8 in flight)", ("nfs.api_read",)
        ),
        row("nfs.read_libnfs", f"read {label} through NFS (libnfs nfs-cp, to a local file)", ("nfs.api_read",)),
        row("nfs.api_write", f"write {label} through the API (PUT /files), same sandbox", short="API"),
        row("nfs.api_read", f"read {label} through the API (GET /files), same sandbox", short="API"),
    ]
