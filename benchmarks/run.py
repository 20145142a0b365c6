"""`make bench`: start private servers, measure everything against baselines taken in the
same run, write benchmarks/results/latest.{md,json} (and a timestamped copy), print the
Markdown. Targets are reported as PASS/MISS, never asserted.

    .venv/bin/python benchmarks/run.py [--quick] [--only lifecycle,commands,...] [--profile]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: import as the `benchmarks` package, from the repo root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks import memory, nfs, scenarios, transfer
from benchmarks.background import background
from benchmarks.cli_startup import cli_startup
from benchmarks.client import Api
from benchmarks.config import Config
from benchmarks.disk_reserve import MODES, reservation_cost
from benchmarks.e2b import e2b_benchmarks
from benchmarks.lifecycle_ops import lifecycle_ops
from benchmarks.ports import ports
from benchmarks.profile_analysis import annotate_with_cpu
from benchmarks.report import Metric, Report, evaluate_all, render_markdown, report_to_json
from benchmarks.server import Server, delete_all, start_server, stop_server
from benchmarks.targets import TARGETS
from benchmarks.templates import POOL_ARGS, template_benchmarks

REPO = Path(__file__).resolve().parents[1]
# Profile sections and the unprofiled CPU cost per op the main run measured for them.
PROFILE_CPU = {
    "server-run": "run.cpu.server",
    "server-stream": "stream.cpu.server",
    "server-write": "files.write_large.cpu.server",
}
SCENARIOS = (
    "baselines",
    "lifecycle",
    "commands",
    "stream",
    "background",
    "files",
    "ports",
    "e2b",
    "pty",
    "cli",
    "concurrency",
    "memory",
    "nfs",
    "templates",
    "disk",
)


def log(message: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Workspace benchmarks (see benchmarks/README.md)")
    parser.add_argument("--quick", action="store_true", help="fewer iterations: about a minute")
    parser.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(SCENARIOS)}")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also profile process.run('true') and streaming (server: pyinstrument, agent: py-spy)",
    )
    parser.add_argument("--profile-only", action="store_true", help="only the profiles, no measurements")
    parser.add_argument("--no-setup", action="store_true", help="skip scripts/setup-bench.sh (podman, py-spy)")
    parser.add_argument("--results-dir", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--pool-size", type=int, default=2, help="warm pool of the main server (server default: 2)")
    parser.add_argument("--iterations", type=int, help="lifecycle iterations")
    parser.add_argument("--runs", type=int, help="process.run iterations")
    parser.add_argument("--idle-sandboxes", type=int, help="sandboxes kept up for the idle-memory measurement")
    parser.add_argument("--clients", type=int, help="concurrent clients")
    parser.add_argument("--stream-mib", type=int, help="MiB to stream (default 256)")
    args = parser.parse_args(argv)
    chosen = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = chosen - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    args.selected = chosen if chosen else set(SCENARIOS)
    if args.profile_only:
        args.selected, args.profile = set(), True
    return args


def config_from(args: argparse.Namespace) -> Config:
    base = Config.quick() if args.quick else Config()
    return base.with_overrides(
        lifecycle_iterations=args.iterations,
        run_iterations=args.runs,
        idle_sandboxes=args.idle_sandboxes,
        concurrency_clients=args.clients,
        stream_bytes=args.stream_mib * (1 << 20) if args.stream_mib else None,
    )


def setup() -> str | None:
    """scripts/setup-bench.sh installs podman and py-spy when missing; None if it went fine."""
    script = REPO / "scripts" / "setup-bench.sh"
    try:
        done = subprocess.run([str(script)], cwd=REPO, capture_output=True, timeout=900, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"scripts/setup-bench.sh could not run: {exc}"
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).decode(errors="replace").strip().splitlines()[-3:]
        return "scripts/setup-bench.sh failed: " + " / ".join(tail)
    return None


def tool_version(*argv: str) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, timeout=30, check=False).stdout.decode()
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    return out.strip().splitlines()[0] if out.strip() else "unknown"


def machine_facts() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, check=False)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True, check=False
    )
    return {
        "commit": commit.stdout.decode().strip() + (" (with local changes)" if dirty.stdout.strip() else ""),
        "cpus": os.cpu_count() or 0,
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "runc": tool_version("runc", "--version"),
        "podman": tool_version("podman", "--version"),
        "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


class Run:
    """One benchmark run: the servers it started and the rows it measured."""

    def __init__(self, root: Path, cfg: Config) -> None:
        self.root = root
        self.cfg = cfg
        self.metrics: list[Metric] = []
        self.notes: list[str] = []
        self.servers: list[Server] = []

    def attempt(self, name: str, action: Callable[[], list[Metric]]) -> None:
        log(name)
        started = time.perf_counter()
        try:
            self.metrics += action()
        except Exception as exc:  # one broken measurement must not lose the others
            traceback.print_exc(file=sys.stderr)
            self.notes.append(f"{name} failed: {type(exc).__name__}: {str(exc)[:400]}")
        log(f"{name}: {time.perf_counter() - started:.1f} s")

    def server(self, name: str, pool_size: int, extra: list[str] | None = None) -> Server:
        log(f"starting the {name} server (--pool-size {pool_size} {' '.join(extra or [])})")
        server = start_server(name, self.root, pool_size, extra=extra)
        self.servers.append(server)
        with Api(server.url) as api:
            if not api.wait_pool(pool_size, timeout=120):
                self.notes.append(f"{name} server: the warm pool did not report full within 120 s")
        return server

    def teardown(self, server: Server) -> None:
        if server not in self.servers:
            return
        self.servers.remove(server)
        errors = delete_all(server)
        if errors:
            self.notes.append(f"cleanup on the {server.name} server: {'; '.join(errors)[:400]}")
        stop_server(server)
        problems = server.log_problems()
        if problems:
            self.notes.append(f"the {server.name} server logged: " + " | ".join(problems))

    def teardown_all(self) -> None:
        for server in list(self.servers):
            try:
                self.teardown(server)
            except Exception as exc:  # keep cleaning up the others
                log(f"teardown of {server.name}: {exc!r}")


def measure(run: Run, selected: set[str], pool_size: int) -> None:
    cfg = run.cfg
    if "baselines" in selected:
        run.attempt("baseline: runc alone", lambda: scenarios.runc_baseline(cfg, run.root))
        run.attempt("baseline: podman", lambda: scenarios.podman_baseline(cfg, run.root))
    on_pool_server = selected - {"baselines", "nfs", "disk"}
    if on_pool_server:
        server = run.server("pool", pool_size)
        steps: list[tuple[str, str, Callable[[], list[Metric]]]] = [
            ("lifecycle", "lifecycle with the warm pool", lambda: scenarios.lifecycle(server, cfg, "pool")),
            (
                "lifecycle",
                "lifecycle with the warm pool, other limits",
                lambda: scenarios.lifecycle(server, cfg, "pool_limits"),
            ),
            ("commands", "process.run round trips", lambda: scenarios.commands(server, cfg)),
            ("stream", "SSE streaming", lambda: transfer.streaming(server, cfg)),
            ("background", "background processes and file watching", lambda: background(server, cfg)),
            ("files", "file transfer", lambda: transfer.files(server, cfg)),
            ("ports", "ports: the HTTP proxy", lambda: ports(server, cfg)),
            ("e2b", "the e2b SDK", lambda: e2b_benchmarks(server, cfg)),
            ("pty", "PTY echo", lambda: scenarios.pty(server, cfg)),
            ("cli", "command line start-up", lambda: cli_startup(server, cfg)),
            ("concurrency", "concurrent clients", lambda: scenarios.concurrency(server, cfg)),
            ("memory", "warm pool memory", lambda: memory.pool_memory(server)),
            ("memory", f"idle memory, {cfg.idle_sandboxes} sandboxes", lambda: memory.idle_memory(server, cfg)),
        ]
        for scenario, title, action in steps:
            if scenario in selected:
                run.attempt(title, action)
        run.teardown(server)
    if "nfs" in selected:
        with_nfs = run.server("nfs", pool_size, nfs.nfs_flags())
        plain = run.server("plain", pool_size)
        run.attempt("NFS: export cost at create", lambda: nfs.create_cost(with_nfs, plain, cfg))
        run.teardown(plain)
        run.attempt("NFS: 256 MiB through NFS", lambda: nfs.transfer(with_nfs, cfg))
        run.teardown(with_nfs)
    if "templates" in selected:
        server = run.server("templates", 1, list(POOL_ARGS))
        run.attempt("image templates", lambda: template_benchmarks(server, cfg, run.root))
        run.teardown(server)
    if "disk" in selected:
        disk_servers = {mode: run.server(mode, 0, flags) for mode, (flags, _) in MODES.items()}
        run.attempt("disk reservation: cold creates", lambda: reservation_cost(disk_servers, cfg))
        for disk_server in disk_servers.values():
            run.teardown(disk_server)
    if "lifecycle" in selected:
        cold = run.server("cold", 0)
        run.attempt("lifecycle, cold", lambda: scenarios.lifecycle(cold, cfg, "cold"))
        run.attempt("lifecycle operations", lambda: lifecycle_ops(cold, cfg))
        run.teardown(cold)


def write_results(report: Report, results_dir: Path) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    markdown = render_markdown(report)
    document = json.dumps(report_to_json(report), indent=2, ensure_ascii=False) + "\n"
    for name in ("latest", stamp):
        for suffix, content in ((".md", markdown), (".json", document)):
            target = results_dir / f"{name}{suffix}"
            temporary = target.with_suffix(suffix + ".tmp")
            temporary.write_text(content)
            temporary.replace(target)
    return results_dir / "latest.md"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = config_from(args)
    if os.geteuid() != 0:
        log("the server needs root (runc, namespaces, cgroups): run as root")
        return 2

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    notes: list[str] = []
    if not args.no_setup:
        log("scripts/setup-bench.sh (podman, py-spy)")
        problem = setup()
        if problem:
            notes.append(problem)
            log(problem)
    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        **machine_facts(),
    }
    root = Path(tempfile.mkdtemp(prefix="workspace-bench-"))
    root.chmod(0o755)  # sandboxes run as an unprivileged host uid that must reach the data dir
    run = Run(root, cfg)
    run.notes += notes
    profile: dict[str, Any] | None = None
    started = time.perf_counter()
    try:
        measure(run, args.selected, args.pool_size)
        if args.profile:
            from benchmarks.profiling import profile as run_profile

            log("profiling (server under pyinstrument, agent under py-spy)")
            try:
                profile = run_profile(root, cfg, args.results_dir, log)
            except Exception as exc:
                traceback.print_exc(file=sys.stderr)
                run.notes.append(f"profiling failed: {type(exc).__name__}: {str(exc)[:400]}")
    except KeyboardInterrupt:
        run.notes.append("interrupted: results are partial")
        log("interrupted; cleaning up")
    finally:
        run.teardown_all()
        shutil.rmtree(root, ignore_errors=True)
    meta["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta["duration"] = f"{time.perf_counter() - started:.0f} s"
    if profile is not None:
        measured = {m.key: m.point for m in run.metrics}
        annotate_with_cpu(
            profile,
            {section: value for section, key in PROFILE_CPU.items() if (value := measured.get(key)) is not None},
        )
    report = Report(meta, run.metrics, evaluate_all(TARGETS, run.metrics), profile, run.notes)
    written = write_results(report, args.results_dir)
    log(f"wrote {written} and {written.with_suffix('.json')}")
    sys.stdout.write(render_markdown(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
