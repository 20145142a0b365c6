"""`--profile`: where the time of the hot paths goes. The server runs under pyinstrument
(benchmarks/profiled_server.py, recording only around each workload) and the sandbox's
agent under py-spy; /proc gives exact CPU totals to put the samples in proportion."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.client import Api
from benchmarks.config import Config
from benchmarks.measure import STREAM_LINE
from benchmarks.procfs import cpu_times
from benchmarks.profile_analysis import breakdown_rows, pyinstrument_breakdown, pyspy_breakdown, top_functions
from benchmarks.server import Server, delete_all, start_server, stop_server
from benchmarks.stats import MIB

# py-spy cannot tell idle agent threads from busy ones (their thread ids live in the
# sandbox's pid namespace), so it records only the thread holding the GIL: Python-level
# work. What the agent's /proc CPU has beyond that is time outside Python (syscalls).
PY_SPY_RATE = 1000


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def start_py_spy(pid: int, output: Path) -> subprocess.Popen[bytes] | None:
    exe = py_spy()
    if exe is None:
        return None
    proc = subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--rate",
            str(PY_SPY_RATE),
            "--format",
            "raw",
            "--output",
            str(output),
            "--threads",
            "--nonblocking",
            "--gil",
            "--duration",
            "3600",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    time.sleep(1.0)  # attach before the workload starts
    if proc.poll() is not None:
        return None
    return proc


def stop_py_spy(proc: subprocess.Popen[bytes] | None) -> str:
    if proc is None:
        return ""
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out.decode(errors="replace")


def wait_for(path: Path, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


def record(
    server: Server,
    out: Path,
    agent_pid: int,
    index: int,
    ops: float,
    work: Callable[[], object],
    name: str,
    title: str,
    per_op_label: str,
) -> dict[str, Any]:
    """Profile one workload on both sides; returns the server and agent breakdowns."""
    agent_raw = out / f"agent-{index}.txt"
    spy = start_py_spy(agent_pid, agent_raw)
    server_cpu0, agent_cpu0 = cpu_times(server.pid), cpu_times(agent_pid)
    loop_cpu0 = cpu_times(server.pid, server.pid)  # the main thread runs the event loop
    os.kill(server.pid, signal.SIGUSR1)
    time.sleep(0.05)
    started = time.perf_counter()
    work()
    wall = time.perf_counter() - started
    os.kill(server.pid, signal.SIGUSR2)
    server_cpu = cpu_times(server.pid) - server_cpu0
    loop_cpu = cpu_times(server.pid, server.pid) - loop_cpu0
    agent_cpu = cpu_times(agent_pid) - agent_cpu0
    spy_log = stop_py_spy(spy)
    per = 1000.0 / ops
    sections: dict[str, Any] = {}
    if wait_for(out / f"session-{index}.done", 120):
        document = json.loads((out / f"session-{index}.json").read_text())
        breakdown = pyinstrument_breakdown(document)
        (out / f"session-{index}-top.txt").write_text(
            f"Server, {title}: functions by self time under pyinstrument (idle and profiler excluded)\n"
            + top_functions(document, ops)
        )
        sections[f"server-{name}"] = {
            "title": f"Server (pyinstrument, wall time on the event-loop thread): {title}",
            "per_op_label": per_op_label,
            "summary": (
                f"{ops:g} ops in {wall:.2f} s under the profiler. /proc: server CPU "
                f"{server_cpu.own * per:.3f} {per_op_label} (all threads), event-loop thread "
                f"{loop_cpu.own * per:.3f}. pyinstrument: Python frames {breakdown.busy * per:.3f} "
                f"{per_op_label} of wall time, loop idle or in uvloop's C code "
                f"{breakdown.idle * per:.3f}, profiler {breakdown.profiler * per:.3f}"
            ),
            "rows": breakdown_rows(breakdown, ops),
            "busy_ms_per_op": breakdown.busy * per,
            "cpu_ms_per_op": server_cpu.own * per,
        }
    else:
        sections[f"server-{name}"] = {"title": f"Server: {title}", "error": "pyinstrument wrote no session"}
    if spy is None:
        sections[f"agent-{name}"] = {
            "title": f"Agent: {title}",
            "error": "py-spy is not installed or could not attach (scripts/setup-bench.sh)",
        }
    elif not agent_raw.exists():
        sections[f"agent-{name}"] = {"title": f"Agent: {title}", "error": f"py-spy wrote nothing: {spy_log[-300:]}"}
    else:
        spied = pyspy_breakdown(agent_raw.read_text(errors="replace"))
        python_seconds = spied.total / PY_SPY_RATE
        rows = breakdown_rows(spied, ops, 1.0 / PY_SPY_RATE)
        outside = agent_cpu.own - python_seconds
        if outside > 0:
            rows.append(
                {
                    "category": "outside Python: syscalls (fork/exec, socket I/O, thread creation)",
                    "ms_per_op": outside * per,
                    "share": None,
                }
            )
        behind = [line for line in spy_log.splitlines() if "behind" in line]
        sections[f"agent-{name}"] = {
            "title": f"Agent (py-spy, samples of the thread holding the GIL): {title}",
            "per_op_label": per_op_label,
            "summary": (
                f"agent CPU {agent_cpu.own * per:.3f} {per_op_label} in its own threads (/proc), of "
                f"which {python_seconds * per:.3f} {per_op_label} executing Python ({spied.total:.0f} "
                f"samples at {PY_SPY_RATE}/s); the commands it spawned: {agent_cpu.children * per:.3f} "
                f"{per_op_label}" + (f"; py-spy: {behind[-1].strip()}" if behind else "")
            ),
            "rows": rows,
            "cpu_ms_per_op": agent_cpu.own * per,
        }
    return sections


def profile(root: Path, cfg: Config, results_dir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    out = root / "profile"
    out.mkdir(parents=True, exist_ok=True)
    server = start_server("profile", root, pool_size=0, profile_dir=out)
    sections: dict[str, Any] = {}
    try:
        with Api(server.url, timeout=600) as api:
            sandbox_id = str(api.create()["id"])
            server.created.add(sandbox_id)
            agent_pid = server.agent_pid(sandbox_id)
            for _ in range(20):
                api.run(sandbox_id, "true")
            runs = cfg.profile_runs
            log(f"profile: {runs} × process.run('true')")
            sections.update(
                record(
                    server,
                    out,
                    agent_pid,
                    1,
                    runs,
                    lambda: [api.run(sandbox_id, "true") for _ in range(runs)],
                    "run",
                    f"{runs} × process.run('true')",
                    "ms per run",
                )
            )
            script = f"yes {STREAM_LINE} | head -c {cfg.stream_bytes}"
            api.stream(sandbox_id, "sh", "-c", f"yes {STREAM_LINE} | head -c {MIB}")
            mib = cfg.stream_bytes // MIB
            log(f"profile: streaming {mib} MiB")
            sections.update(
                record(
                    server,
                    out,
                    agent_pid,
                    2,
                    mib,
                    lambda: api.stream(sandbox_id, "sh", "-c", script),
                    "stream",
                    f"SSE stream of {mib} MiB",
                    "ms per MiB",
                )
            )
            upload = os.urandom(MIB) * (cfg.large_file_bytes // MIB)
            api.write_file(sandbox_id, "/workspace/warm-up.bin", upload[:MIB])
            mib = cfg.large_file_bytes // MIB
            log(f"profile: writing a {mib} MiB file")
            sections.update(
                record(
                    server,
                    out,
                    agent_pid,
                    3,
                    mib,
                    lambda: api.write_file(sandbox_id, "/workspace/large.bin", upload),
                    "write",
                    f"PUT /files of {mib} MiB",
                    "ms per MiB",
                )
            )
    finally:
        delete_all(server)
        stop_server(server)
    target = results_dir / "profile"
    shutil.rmtree(target, ignore_errors=True)  # only this run's profiles
    target.mkdir(parents=True, exist_ok=True)
    for index, name in ((1, "run"), (2, "stream"), (3, "write")):
        for suffix, kind in ((".txt", "calltree"), ("-top.txt", "top-functions")):
            source = out / f"session-{index}{suffix}"
            if source.exists():
                shutil.copyfile(source, target / f"{name}-server-{kind}.txt")
        agent = out / f"agent-{index}.txt"
        if agent.exists():
            shutil.copyfile(agent, target / f"{name}-agent-stacks.txt")
    return sections
