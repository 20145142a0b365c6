"""Streaming and file transfer against a live server, beside pipe and local-copy baselines
of the same run."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchmarks.baselines import (
    local_file_copy,
    pipe_throughput,
)
from benchmarks.client import Api
from benchmarks.config import Config
from benchmarks.measure import (
    BASELINES,
    STREAM_LINE,
    TRANSFER,
    CpuMeter,
    cpu_seconds_self,
    expect,
    latency,
)
from benchmarks.procfs import RssSampler
from benchmarks.report import Metric
from benchmarks.server import Server
from benchmarks.stats import MIB, mb_per_s, percentile


def streaming(server: Server, cfg: Config) -> list[Metric]:
    script = f"yes {STREAM_LINE} | head -c {cfg.stream_bytes}"
    rates: list[float] = []
    growth: list[int] = []
    client_cpu: list[float] = []
    cpu = CpuMeter(server)
    events = 0
    with Api(server.url, timeout=600) as api:
        sandbox_id = str(api.create()["id"])
        server.created.add(sandbox_id)
        try:
            api.stream(sandbox_id, "sh", "-c", f"yes {STREAM_LINE} | head -c {1 << 20}")  # warm-up
            cpu.agent_pid = server.agent_pid(sandbox_id)
            for _ in range(cfg.stream_reps):
                c0 = cpu_seconds_self()
                with RssSampler(server.pid) as sampler, cpu:
                    t0 = time.perf_counter()
                    tally = api.stream(sandbox_id, "sh", "-c", script)
                    elapsed = time.perf_counter() - t0
                expect(tally.exit_code == 0, f"the stream ended without exit 0: {tally}")
                expect(tally.stdout_chars == cfg.stream_bytes, f"got {tally.stdout_chars} of {cfg.stream_bytes} bytes")
                rates.append(mb_per_s(cfg.stream_bytes, elapsed))
                growth.append(sampler.peak_growth)
                client_cpu.append((cpu_seconds_self() - c0) / elapsed)
                events = tally.events
            sdk_rate, sdk_cpu = sdk_stream_rate(server.url, sandbox_id, script, cfg.stream_bytes)
        finally:
            api.delete(sandbox_id)
            server.created.discard(sandbox_id)
    local_bytes, local_seconds = pipe_throughput(["sh", "-c", script])
    size = f"{cfg.stream_bytes // MIB} MiB"
    return [
        Metric(
            key="stream.throughput",
            section=TRANSFER,
            label=f"SSE stdout throughput, {size} (POST /processes/stream)",
            unit="MB/s",
            value=percentile(rates, 50),
            baselines=("base.pipe",),
            note=f"reps: {', '.join(f'{r:.0f}' for r in rates)} MB/s; {events} SSE events; "
            f"client CPU {max(client_cpu) * 100:.0f} % of one core; events decoded by pydantic-core",
        ),
        Metric(
            key="stream.sdk_throughput",
            section=TRANSFER,
            label=f"the same through the Python SDK (`process.run_stream`, sync), {size}",
            unit="MB/s",
            value=sdk_rate,
            baselines=("base.pipe",),
            note=f"the SDK decodes events with the stdlib's json (its only dependencies are httpx and "
            f"websockets); client CPU {sdk_cpu * 100:.0f} % of one core",
        ),
        Metric(
            key="stream.rss",
            section=TRANSFER,
            label=f"server RSS growth while streaming {size}",
            unit="MiB",
            value=max(growth) / MIB,
        ),
        *cpu.rows("stream", TRANSFER, "streamed", cfg.stream_reps * cfg.stream_bytes / MIB),
        Metric(
            key="base.pipe",
            section=BASELINES,
            label=f"same command read from a local pipe, {size}",
            unit="MB/s",
            value=mb_per_s(local_bytes, local_seconds),
            short="local pipe",
        ),
    ]


def sdk_stream_rate(url: str, sandbox_id: str, script: str, expected: int) -> tuple[float, float]:
    """MB/s of one run of `script` streamed through the SDK, and the client's CPU share."""
    from workspace_sdk import RunCommandOptions, WorkspaceClient

    received = 0
    with WorkspaceClient(url, timeout=600) as client:
        c0, t0 = cpu_seconds_self(), time.perf_counter()
        for event in client.process.run_stream(sandbox_id, "sh", RunCommandOptions(args=["-c", script])):
            if event.type == "stdout":
                received += len(event.data)
            elif event.type in ("exit", "error"):
                break
        elapsed = time.perf_counter() - t0
    expect(received == expected, f"the SDK stream got {received} of {expected} bytes")
    return mb_per_s(expected, elapsed), (cpu_seconds_self() - c0) / elapsed


def files(server: Server, cfg: Config) -> list[Metric]:
    small = os.urandom(MIB)
    large = os.urandom(MIB) * (cfg.large_file_bytes // MIB)
    small_write: list[float] = []
    small_read: list[float] = []
    large_rates: dict[str, list[float]] = {"write": [], "read": []}
    large_growth: dict[str, list[int]] = {"write": [], "read": []}
    meters = {"write": CpuMeter(server), "read": CpuMeter(server)}
    with Api(server.url, timeout=600) as api:
        sandbox_id = str(api.create()["id"])
        server.created.add(sandbox_id)
        for meter in meters.values():
            meter.agent_pid = server.agent_pid(sandbox_id)
        try:
            for i in range(cfg.small_file_reps + 2):
                t0 = time.perf_counter()
                info = api.write_file(sandbox_id, "/workspace/small.bin", small)
                t1 = time.perf_counter()
                received = api.read_file(sandbox_id, "/workspace/small.bin")
                t2 = time.perf_counter()
                expect(info.get("size") == MIB and received == MIB, f"1 MiB round trip: {info}, {received}")
                if i >= 2:
                    small_write.append(t1 - t0)
                    small_read.append(t2 - t1)
            for _ in range(cfg.large_file_reps):
                with RssSampler(server.pid) as sampler, meters["write"]:
                    t0 = time.perf_counter()
                    info = api.write_file(sandbox_id, "/workspace/large.bin", large)
                    elapsed = time.perf_counter() - t0
                expect(info.get("size") == len(large), f"large write: {info}")
                large_rates["write"].append(mb_per_s(len(large), elapsed))
                large_growth["write"].append(sampler.peak_growth)
                with RssSampler(server.pid) as sampler, meters["read"]:
                    t0 = time.perf_counter()
                    received = api.read_file(sandbox_id, "/workspace/large.bin")
                    elapsed = time.perf_counter() - t0
                expect(received == len(large), f"large read: {received} bytes")
                large_rates["read"].append(mb_per_s(len(large), elapsed))
                large_growth["read"].append(sampler.peak_growth)
                # The sandbox's disk is tmpfs, charged to its memory limit: don't keep two copies.
                api.remove_file(sandbox_id, "/workspace/large.bin")
            listing, listing_growth, ls_times = list_directory(server, api, sandbox_id, cfg.small_file_reps)
        finally:
            api.delete(sandbox_id)
            server.created.discard(sandbox_id)
    size = f"{cfg.large_file_bytes // MIB} MiB"
    shm = Path("/dev/shm")
    local_write, local_read = local_file_copy(large, shm if shm.is_dir() else Path(tempfile.gettempdir()))
    rows = [
        latency(
            "files.write_small",
            TRANSFER,
            "file write 1 MiB (PUT /files)",
            small_write,
            note=f"{mb_per_s(MIB, percentile(small_write, 50)):.0f} MB/s at p50",
        ),
        latency(
            "files.read_small",
            TRANSFER,
            "file read 1 MiB (GET /files)",
            small_read,
            note=f"{mb_per_s(MIB, percentile(small_read, 50)):.0f} MB/s at p50",
        ),
    ]
    for op in ("write", "read"):
        rows.append(
            Metric(
                key=f"files.{op}_large",
                section=TRANSFER,
                label=f"file {op} {size}",
                unit="MB/s",
                value=percentile(large_rates[op], 50),
                baselines=(f"base.file_{op}",),
                note="reps: " + ", ".join(f"{r:.0f}" for r in large_rates[op]) + " MB/s",
            )
        )
        rows.append(
            Metric(
                key=f"files.{op}_large.rss",
                section=TRANSFER,
                label=f"server peak RSS growth during the {size} {op}",
                unit="MiB",
                value=max(large_growth[op]) / MIB,
                note="the kernel's peak (VmHWM), reset before",
            )
        )
        rows += meters[op].rows(
            f"files.{op}_large",
            TRANSFER,
            "written" if op == "write" else "read",
            cfg.large_file_reps * cfg.large_file_bytes / MIB,
        )
    rows += [
        latency(
            "files.list_10k",
            TRANSFER,
            f"directory listing of {LIST_ENTRIES:,} entries (GET /files/list, streamed)",
            listing,
            baselines=("base.ls_10k",),
            note=f"server peak RSS growth {max(listing_growth) / MIB:.1f} MiB (VmHWM, reset before)",
        ),
        latency(
            "base.ls_10k",
            BASELINES,
            f"`ls -l` of the same {LIST_ENTRIES:,} entries, output returned by process.run",
            ls_times,
            short="ls -l via run",
        ),
        Metric(
            key="base.file_write",
            section=BASELINES,
            label=f"local tmpfs file write {size}",
            unit="MB/s",
            value=mb_per_s(len(large), local_write),
            short="local tmpfs",
        ),
        Metric(
            key="base.file_read",
            section=BASELINES,
            label=f"local tmpfs file read {size}",
            unit="MB/s",
            value=mb_per_s(len(large), local_read),
            short="local tmpfs",
        ),
    ]
    return rows


LIST_ENTRIES = 10_000


def list_directory(server: Server, api: Api, sandbox_id: str, reps: int) -> tuple[list[float], list[int], list[float]]:
    """Time listings of a directory of LIST_ENTRIES files (and the server's peak RSS growth),
    interleaved with `ls -l` of it through process.run: the same entries, as text."""
    made = api.run(
        sandbox_id,
        "python3",
        "-c",
        "import os; os.mkdir('/workspace/many')\n"
        f"for i in range({LIST_ENTRIES}): open('/workspace/many/f%05d' % i, 'w').close()",
    )
    expect(made["exit_code"] == 0, f"making {LIST_ENTRIES} files: {made}")
    times: list[float] = []
    growth: list[int] = []
    ls_times: list[float] = []
    for i in range(reps + 1):
        with RssSampler(server.pid) as sampler:
            t0 = time.perf_counter()
            count = api.list_files(sandbox_id, "/workspace/many")
            elapsed = time.perf_counter() - t0
        expect(count == LIST_ENTRIES, f"listed {count} entries")
        t0 = time.perf_counter()
        answer = api.run(sandbox_id, "ls", "-l", "/workspace/many")
        ls_elapsed = time.perf_counter() - t0
        expect(answer["exit_code"] == 0, f"ls: {answer}")
        if i:  # the first of each warms the caches
            times.append(elapsed)
            growth.append(sampler.peak_growth)
            ls_times.append(ls_elapsed)
    return times, growth, ls_times


# --------------------------------------------------------------------------- PTY
