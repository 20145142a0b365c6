"""The measurements of a sandbox's life against a live server: lifecycle, commands, PTY,
concurrency, and the runc/podman baselines they are compared with in the same run."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from benchmarks.baselines import (
    BaselineUnavailable,
    Podman,
    RuncBundle,
    concurrent_fork_exec,
    fork_exec,
    local_pty_echo,
)
from benchmarks.client import Api, ApiError, open_pty
from benchmarks.config import Config
from benchmarks.measure import (
    BASELINES,
    COMMANDS,
    CONCURRENCY,
    LIFECYCLE,
    PTY,
    cpu_seconds_self,
    create_many,
    delete_many,
    expect,
    latency,
)
from benchmarks.procfs import cpu_times
from benchmarks.report import Metric, failed
from benchmarks.server import Server

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
