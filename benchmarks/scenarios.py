"""The measurements against a live server. Each scenario returns report rows; the
baselines it is compared with are measured in the same run, interleaved where cheap."""

from __future__ import annotations

import os
import resource
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from benchmarks.baselines import (
    BaselineUnavailable,
    Podman,
    RuncBundle,
    concurrent_fork_exec,
    fork_exec,
    local_file_copy,
    local_pty_echo,
    pipe_throughput,
)
from benchmarks.client import Api, ApiError, open_pty
from benchmarks.config import Config
from benchmarks.procfs import CpuTimes, RssSampler, cgroup_memory, cpu_times, rss_bytes
from benchmarks.report import Metric, failed
from benchmarks.server import Server
from benchmarks.stats import MIB, mb_per_s, percentile, scaled, summarize

T = TypeVar("T")

LIFECYCLE = "Sandbox lifecycle: create → first command → delete"
COMMANDS = "Commands: process.run round trip"
TRANSFER = "Streaming and files"
PTY = "PTY"
CONCURRENCY = "Concurrency"
MEMORY = "Memory"
BASELINES = "Baselines (same run)"

# 63 printable bytes and a newline: `yes` repeats it; JSON escapes only the newline.
STREAM_LINE = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"


def latency(
    key: str,
    section: str,
    label: str,
    samples: Sequence[float],
    *,
    baselines: tuple[str, ...] = (),
    short: str = "",
    note: str = "",
) -> Metric:
    """A row summarising samples taken in seconds, shown in milliseconds."""
    return Metric(
        key=key,
        section=section,
        label=label,
        unit="ms",
        summary=summarize(scaled(samples, 1000)),
        baselines=baselines,
        short=short,
        note=note,
    )


def cpu_seconds_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """Adds up the server's and an agent's CPU time over the `with` blocks it is used in."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.agent_pid: int | None = None
        self.server_seconds = 0.0
        self.agent_seconds = 0.0
        self._start: tuple[CpuTimes, CpuTimes | None] | None = None

    def __enter__(self) -> CpuMeter:
        agent = cpu_times(self.agent_pid) if self.agent_pid is not None else None
        self._start = (cpu_times(self.server.pid), agent)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._start is not None
        server0, agent0 = self._start
        self.server_seconds += (cpu_times(self.server.pid) - server0).own
        if self.agent_pid is not None and agent0 is not None:
            self.agent_seconds += (cpu_times(self.agent_pid) - agent0).own

    def rows(self, key: str, section: str, verb: str, mib: float) -> list[Metric]:
        if mib <= 0:
            return []
        return [
            Metric(
                key=f"{key}.cpu.server",
                section=section,
                label=f"  server CPU per MiB {verb}",
                unit="ms",
                value=self.server_seconds * 1000 / mib,
            ),
            Metric(
                key=f"{key}.cpu.agent",
                section=section,
                label=f"  agent CPU per MiB {verb}",
                unit="ms",
                value=self.agent_seconds * 1000 / mib,
            ),
        ]


def in_parallel(workers: int, items: Sequence[T], action: Callable[[T], object]) -> None:
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for future in [pool.submit(action, item) for item in items]:
            future.result()


def create_many(server: Server, count: int, workers: int) -> list[str]:
    ids: list[str] = []
    lock = threading.Lock()

    def create(_: int) -> None:
        with Api(server.url) as api:
            sandbox_id = str(api.create()["id"])
        with lock:
            ids.append(sandbox_id)
            server.created.add(sandbox_id)

    in_parallel(workers, list(range(count)), create)
    return ids


def delete_many(server: Server, ids: Sequence[str], workers: int) -> None:
    def delete(sandbox_id: str) -> None:
        with Api(server.url) as api:
            api.delete(sandbox_id)
        server.created.discard(sandbox_id)

    in_parallel(workers, list(ids), delete)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise ApiError(message)


# --------------------------------------------------------------------------- lifecycle


# Limits other than the server's defaults: a pool sandbox gets them on claim.
OTHER_LIMITS = {"cpu": 0.5, "memory_mb": 256, "pids": 128}
LIFECYCLE_TITLES = {
    "pool": "warm pool",
    "cold": "cold, --pool-size 0",
    "pool_limits": "warm pool, " + ", ".join(f"{k} {v}" for k, v in OTHER_LIMITS.items()),
}


def lifecycle(server: Server, cfg: Config, mode: str) -> list[Metric]:
    """create → run('true') → run('true') again → delete(force), timed per phase. With a
    pool, each iteration first waits until the pool is full again, so every create is a
    pool hit (the refill then runs during the first command, as it would for a user).
    Mode `pool_limits` asks for other cpu/memory/pids limits than the pool's."""
    params = OTHER_LIMITS if mode == "pool_limits" else {}
    phases: dict[str, list[float]] = {
        name: [] for name in ("create", "first", "second", "create_to_first", "delete", "total")
    }
    with Api(server.url) as api:
        before = api.create_sources()
        for i in range(cfg.lifecycle_warmup + cfg.lifecycle_iterations):
            if server.pool_size > 0:
                api.wait_pool(server.pool_size)
            t0 = time.perf_counter()
            sandbox = api.create(**params)
            t1 = time.perf_counter()
            server.created.add(str(sandbox["id"]))
            result = api.run(sandbox["id"], "true")
            t2 = time.perf_counter()
            api.run(sandbox["id"], "true")
            t3 = time.perf_counter()
            api.delete(sandbox["id"])
            t4 = time.perf_counter()
            server.created.discard(str(sandbox["id"]))
            expect(result.get("exit_code") == 0, f"true exited with {result}")
            if i >= cfg.lifecycle_warmup:
                for name, value in (
                    ("create", t1 - t0),
                    ("first", t2 - t1),
                    ("second", t3 - t2),
                    ("create_to_first", t2 - t0),
                    ("delete", t4 - t3),
                    ("total", (t2 - t0) + (t4 - t3)),
                ):
                    phases[name].append(value)
        after = api.create_sources()
    sources = ", ".join(f"{k}: {after.get(k, 0) - before.get(k, 0):.0f}" for k in sorted(after)) or "unknown"
    title = LIFECYCLE_TITLES[mode]
    prefix = f"lifecycle.{mode}"
    return [
        latency(
            f"{prefix}.create",
            LIFECYCLE,
            f"create ({title})",
            phases["create"],
            note=f"server-side create sources: {sources}",
        ),
        latency(f"{prefix}.first_command", LIFECYCLE, f"first process.run('true') ({title})", phases["first"]),
        latency(f"{prefix}.second_command", LIFECYCLE, f"second process.run('true') ({title})", phases["second"]),
        latency(
            f"{prefix}.create_to_first",
            LIFECYCLE,
            f"create → first command finished ({title})",
            phases["create_to_first"],
            baselines=("base.podman.run", "base.runc.run"),
        ),
        latency(
            f"{prefix}.delete",
            LIFECYCLE,
            f"delete, force=true ({title})",
            phases["delete"],
            baselines=("base.podman.rm",),
        ),
        latency(
            f"{prefix}.total",
            LIFECYCLE,
            f"create → first command → deleted ({title})",
            phases["total"],
            baselines=("base.podman.run_rm", "base.runc.run"),
            note="create + first command + delete; the second command is not counted",
        ),
    ]


# --------------------------------------------------------------------------- commands


def commands(server: Server, cfg: Config) -> list[Metric]:
    """process.run of `true` and `echo hello`, interleaved with the same commands run by
    bare fork+exec here, so both see the same machine noise."""
    ws_true: list[float] = []
    ws_echo: list[float] = []
    fe_true: list[float] = []
    fe_echo: list[float] = []
    floor_http: list[float] = []
    floor_agent: list[float] = []
    with Api(server.url) as api:
        sandbox_id = str(api.create()["id"])
        server.created.add(sandbox_id)
        try:
            for i in range(cfg.run_warmup + cfg.run_iterations):
                record = i >= cfg.run_warmup
                a = fork_exec(["true"], capture=False)
                t0 = time.perf_counter()
                api.run(sandbox_id, "true")
                b = time.perf_counter() - t0
                c = fork_exec(["echo", "hello"], capture=True)
                t0 = time.perf_counter()
                answer = api.run(sandbox_id, "echo", "hello")
                d = time.perf_counter() - t0
                expect(answer.get("stdout") == "hello\n", f"echo hello answered {answer}")
                t0 = time.perf_counter()
                api.health()
                e = time.perf_counter() - t0
                t0 = time.perf_counter()
                api.exists(sandbox_id, "/tmp")
                f = time.perf_counter() - t0
                if record:
                    floor_http.append(e)
                    floor_agent.append(f)
                    fe_true.append(a)
                    ws_true.append(b)
                    fe_echo.append(c)
                    ws_echo.append(d)
            cpu = cpu_per_run(server, api, sandbox_id, cfg.cpu_accounting_runs)
        finally:
            api.delete(sandbox_id)
            server.created.discard(sandbox_id)
    return [
        latency(
            "run.true",
            COMMANDS,
            "process.run('true')",
            ws_true,
            baselines=("base.fork_exec.true", "base.runc.exec", "base.podman.exec"),
        ),
        latency("run.echo", COMMANDS, "process.run('echo', ['hello'])", ws_echo, baselines=("base.fork_exec.echo",)),
        latency(
            "run.floor.http",
            COMMANDS,
            "floor: GET /healthz (HTTP round trip, no sandbox)",
            floor_http,
            baselines=("base.fork_exec.true",),
            note="interleaved with process.run",
        ),
        latency(
            "run.floor.agent",
            COMMANDS,
            "floor: GET /files/exists (HTTP + agent round trip, no process)",
            floor_agent,
            baselines=("base.fork_exec.true",),
            note="interleaved with process.run",
        ),
        *cpu,
        latency(
            "base.fork_exec.true",
            BASELINES,
            "bare fork+exec: subprocess.run(['true'])",
            fe_true,
            short="fork+exec",
            note="interleaved with process.run",
        ),
        latency(
            "base.fork_exec.echo",
            BASELINES,
            "bare fork+exec: subprocess.run(['echo', 'hello'])",
            fe_echo,
            short="fork+exec",
            note="stdout captured; interleaved with process.run",
        ),
    ]


def cpu_per_run(server: Server, api: Api, sandbox_id: str, runs: int) -> list[Metric]:
    """CPU time one process.run('true') costs each party, from /proc and getrusage."""
    agent_pid = server.agent_pid(sandbox_id)
    server0, agent0, client0 = cpu_times(server.pid), cpu_times(agent_pid), cpu_seconds_self()
    t0 = time.perf_counter()
    for _ in range(runs):
        api.run(sandbox_id, "true")
    wall = time.perf_counter() - t0
    server_cpu = cpu_times(server.pid) - server0
    agent_cpu = cpu_times(agent_pid) - agent0
    client_cpu = cpu_seconds_self() - client0
    per = 1000.0 / runs

    def row(key: str, label: str, seconds: float, note: str = "") -> Metric:
        return Metric(key=f"run.cpu.{key}", section=COMMANDS, label=label, unit="ms", value=seconds * per, note=note)

    return [
        row("wall", "process.run('true') wall time, back to back (mean)", wall),
        row("server", "server CPU per process.run('true')", server_cpu.own, note="uvicorn process, all threads"),
        row(
            "agent",
            "agent CPU per process.run('true')",
            agent_cpu.own,
            note=f"PID 1 in the sandbox, all threads; the `true` processes themselves: "
            f"{agent_cpu.children * per:.2f} ms (10 ms clock ticks)",
        ),
        row("client", "benchmark client CPU per request (httpx)", client_cpu),
    ]


# --------------------------------------------------------------------------- streaming, files


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


# --------------------------------------------------------------------------- PTY


def pty(server: Server, cfg: Config) -> list[Metric]:
    """Keystroke → echo through WebSocket, server, agent link, the pty and bash's readline."""
    samples: list[float] = []
    with Api(server.url) as api:
        sandbox_id = str(api.create()["id"])
        server.created.add(sandbox_id)
        try:
            with open_pty(server.url, sandbox_id) as terminal:
                terminal.drain(quiet=0.5)  # the prompt
                warmup = 5
                for i in range(warmup + cfg.pty_keystrokes):
                    if i and i % 40 == 0:
                        terminal.send(b"\x15")  # ^U: keep the line short
                        terminal.drain(quiet=0.2)
                    t0 = time.perf_counter()
                    terminal.send(b"a")
                    seen = b""
                    while b"a" not in seen:
                        data = terminal.recv_data(10.0)
                        expect(data is not None, "no echo within 10 s")
                        seen += data or b""
                    if i >= warmup:
                        samples.append(time.perf_counter() - t0)
        finally:
            api.delete(sandbox_id)
            server.created.discard(sandbox_id)
    rows = [latency("pty.echo", PTY, "keystroke → echo (WebSocket PTY, bash)", samples, baselines=("base.pty",))]
    try:
        local = local_pty_echo(cfg.pty_keystrokes)
        rows.append(latency("base.pty", BASELINES, "keystroke → echo, local pty + bash", local, short="local pty"))
    except OSError as exc:
        rows.append(
            Metric(
                key="base.pty",
                section=BASELINES,
                label="keystroke → echo, local pty + bash",
                unit="ms",
                short="local pty",
                error=str(exc),
            )
        )
    return rows


# --------------------------------------------------------------------------- concurrency


def concurrency(server: Server, cfg: Config) -> list[Metric]:
    """N clients, each with its own sandbox and connection, running `true` back to back."""
    clients = cfg.concurrency_clients
    ids = create_many(server, clients, cfg.parallel_setup)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def worker(index: int) -> None:
        with Api(server.url) as api:
            for _ in range(3):
                api.run(ids[index], "true")
            barrier.wait()
            while time.perf_counter() < stop_at[0]:
                t0 = time.perf_counter()
                try:
                    api.run(ids[index], "true")
                except ApiError as exc:
                    errors.append(str(exc))
                    continue
                latencies[index].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    stop_at[0] = float("inf")  # until every client is warm and waiting at the barrier
    try:
        for t in threads:
            t.start()
        barrier.wait()
        c0 = cpu_seconds_self()
        started = time.perf_counter()
        stop_at[0] = started + cfg.concurrency_seconds
        for t in threads:
            t.join()
        wall = time.perf_counter() - started
        client_cpu = (cpu_seconds_self() - c0) / wall
    finally:
        delete_many(server, ids, cfg.parallel_setup)
    flat = [x for per in latencies for x in per]
    base_samples, base_wall = concurrent_fork_exec(["true"], clients, cfg.concurrency_seconds / 2)
    note = f"client CPU {client_cpu * 100:.0f} % of one core"
    if errors:
        note += f"; {len(errors)} errors, first: {errors[0][:120]}"
    return [
        Metric(
            key="conc.throughput",
            section=CONCURRENCY,
            label=f"{clients} concurrent clients running `true` (own sandbox each)",
            unit="runs/s",
            value=len(flat) / wall,
            baselines=("base.conc.throughput",),
            note=note,
        ),
        latency(
            "conc.latency",
            CONCURRENCY,
            f"process.run('true') latency with {clients} clients",
            flat,
            baselines=("base.conc.latency",),
        ),
        Metric(
            key="base.conc.throughput",
            section=BASELINES,
            label=f"{clients} threads running bare fork+exec of `true`",
            unit="runs/s",
            value=len(base_samples) / base_wall,
            short="bare fork+exec",
        ),
        latency(
            "base.conc.latency",
            BASELINES,
            f"bare fork+exec latency with {clients} threads",
            base_samples,
            short="bare fork+exec",
        ),
    ]


# --------------------------------------------------------------------------- memory


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


def idle_memory(server: Server, cfg: Config) -> list[Metric]:
    """N idle sandboxes: their memory cgroups' usage plus what the server grew by."""
    count = cfg.idle_sandboxes
    with Api(server.url) as api:
        api.wait_pool(server.pool_size)
    time.sleep(0.5)
    rss_before = rss_bytes(server.pid)
    t0 = time.perf_counter()
    ids = create_many(server, count, cfg.parallel_setup)
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


def runc_baseline(cfg: Config, scratch: Path) -> list[Metric]:
    """The isolation tool alone: `runc run` of /bin/true in a minimal bundle, and
    `runc exec` into a running one."""
    keys = (
        ("base.runc.run", "`runc run` /bin/true, minimal bundle (create, start, wait, delete)", "runc run"),
        ("base.runc.exec", "`runc exec` /bin/true into a running minimal container", "runc exec"),
    )
    try:
        bundle = RuncBundle(scratch)
    except (BaselineUnavailable, OSError) as exc:
        return [failed(k, BASELINES, label, "ms", str(exc), short=short) for k, label, short in keys]
    rows: list[Metric] = []
    try:
        runs = [bundle.run_once(["/bin/true"]) for _ in range(cfg.runc_iterations + 1)][1:]
        rows.append(
            latency(
                keys[0][0],
                BASELINES,
                keys[0][1],
                runs,
                short=keys[0][2],
                note="pid/net/ipc/uts/mount namespaces, no user namespace or seccomp (runc spec)",
            )
        )
        container = bundle.start_detached(["/bin/sleep", "3600"])
        execs = [bundle.exec_once(container, ["/bin/true"]) for _ in range(cfg.runc_iterations * 2 + 1)][1:]
        rows.append(latency(keys[1][0], BASELINES, keys[1][1], execs, short=keys[1][2]))
    except (BaselineUnavailable, OSError) as exc:
        done = {r.key for r in rows}
        rows += [failed(k, BASELINES, label, "ms", str(exc), short=short) for k, label, short in keys if k not in done]
    finally:
        bundle.cleanup()
    return rows


def podman_baseline(cfg: Config, scratch: Path) -> list[Metric]:
    keys = (
        ("base.podman.run_rm", "`podman run --rm` true (create, start, wait, remove)", "podman run --rm"),
        ("base.podman.run", "`podman run` true (create → command finished)", "podman run"),
        ("base.podman.rm", "`podman rm` of the exited container", "podman rm"),
        ("base.podman.exec", "`podman exec` true into a running container", "podman exec"),
    )
    rows: list[Metric] = []
    podman: Podman | None = None
    try:
        podman = Podman(scratch)
        n = cfg.podman_iterations
        run_rm = [podman.run_rm(["true"]) for _ in range(n)]
        rows.append(
            latency(
                keys[0][0],
                BASELINES,
                keys[0][1],
                run_rm,
                short=keys[0][2],
                note=f"image {podman.image}: the host's own binaries; --network none",
            )
        )
        split = [podman.run_then_rm(["true"]) for _ in range(n)]
        rows.append(latency(keys[1][0], BASELINES, keys[1][1], [a for a, _ in split], short=keys[1][2]))
        rows.append(latency(keys[2][0], BASELINES, keys[2][1], [b for _, b in split], short=keys[2][2]))
        container = podman.start_detached(["sleep", "3600"])
        execs = [podman.exec_once(container, ["true"]) for _ in range(n * 2 + 1)][1:]
        rows.append(latency(keys[3][0], BASELINES, keys[3][1], execs, short=keys[3][2]))
    except (BaselineUnavailable, OSError) as exc:
        done = {r.key for r in rows}
        rows += [failed(k, BASELINES, label, "ms", str(exc), short=short) for k, label, short in keys if k not in done]
    finally:
        if podman is not None:
            podman.cleanup()
    return rows
