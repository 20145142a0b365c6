"""A private `workspace serve` for the benchmark: free loopback port, its own data dir,
and a teardown that leaves nothing behind (sandboxes, runc state, mounts) even when the
server itself misbehaved."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from benchmarks.client import Api, ApiError
from benchmarks.procfs import cgroup_of, memory_cgroup_dir

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    url: str
    pid: int
    data_dir: Path
    log_path: Path
    pool_size: int
    process: subprocess.Popen[bytes]
    memory_cgroup: str = ""
    created: set[str] = field(default_factory=set)  # sandboxes the benchmark made here

    @property
    def sandbox_cgroups(self) -> Path:
        """Where this server puts sandbox memory cgroups (runtimes/cgroups.py)."""
        return memory_cgroup_dir(self.memory_cgroup.rstrip("/") + "/workspace")

    def agent_pid(self, sandbox_id: str) -> int:
        """Host pid of the sandbox's init (the agent), from the runtime's pid file."""
        return int((self.data_dir / "sandboxes" / sandbox_id / "init.pid").read_text().strip())

    def log_problems(self, limit: int = 3) -> list[str]:
        """WARNING/ERROR lines of the server's log (the first few, and how many)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        bad = [line for line in lines if "level=WARNING" in line or "level=ERROR" in line or "Traceback" in line]
        out = [line[:300] for line in bad[:limit]]
        if len(bad) > limit:
            out.append(f"... and {len(bad) - limit} more")
        return out

    def log_tail(self, size: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-size:]
        except OSError:
            return ""


def server_command(
    port: int, data_dir: Path, pool_size: int, profile_dir: Path | None, extra: list[str] | None = None
) -> list[str]:
    args = [
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        "--pool-size",
        str(pool_size),
        "--log-level",
        "WARNING",
        *(extra or []),
    ]
    if profile_dir is not None:
        return [sys.executable, "-m", "benchmarks.profiled_server", str(profile_dir), *args]
    exe = VENV_BIN / "workspace"
    if exe.exists():
        return [str(exe), *args]
    return [sys.executable, "-m", "workspace_server", *args]


def start_server(
    name: str,
    root: Path,
    pool_size: int,
    profile_dir: Path | None = None,
    timeout: float = 60.0,
    extra: list[str] | None = None,
) -> Server:
    data_dir = root / f"data-{name}"
    log_path = root / f"server-{name}.log"
    port = free_port()
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            server_command(port, data_dir, pool_size, profile_dir, extra),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            start_new_session=True,
        )
    server = Server(name, f"http://127.0.0.1:{port}", process.pid, data_dir, log_path, pool_size, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the {name} server exited early:\n{server.log_tail()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == 200:
                server.memory_cgroup = cgroup_of(server.pid)
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"the {name} server did not become healthy:\n{server.log_tail()}")


def delete_all(server: Server, workers: int = 4) -> list[str]:
    """Delete every sandbox the server knows (user sandboxes outlive the server).
    Returns the errors, if any."""
    errors: list[str] = []
    try:
        with Api(server.url) as api:
            ids = api.list_ids()
    except (httpx.HTTPError, ApiError) as exc:
        return [f"listing sandboxes: {exc}"]

    def remove(sandbox_id: str) -> None:
        try:
            with Api(server.url) as api:
                api.delete(sandbox_id, force=True)
        except (httpx.HTTPError, ApiError) as exc:
            errors.append(f"{sandbox_id}: {exc}")

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(remove, ids))
    return errors


def stop_server(server: Server, timeout: float = 60.0) -> None:
    """SIGINT (uvicorn's graceful stop; also lets a profiler write its output), then
    SIGKILL; then remove whatever the server left in its data dir."""
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGINT)
        try:
            server.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    scrub_data_dir(server)


def _run_quiet(*argv: str) -> tuple[int, str]:
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 1, str(exc)
    return done.returncode, (done.stdout + done.stderr).decode(errors="replace")


def scrub_data_dir(server: Server) -> None:
    """Last resort after the server is gone: delete leftover runc containers, unmount
    sandbox disks, remove cgroups. A clean server leaves nothing, so this is usually a no-op."""
    state = server.data_dir / "runc"
    if state.is_dir():
        code, out = _run_quiet("runc", "--root", str(state), "list", "--format", "json")
        if code == 0 and out.strip() not in ("", "null"):
            with contextlib.suppress(ValueError, KeyError, TypeError):
                for entry in json.loads(out):
                    _run_quiet("runc", "--root", str(state), "delete", "--force", str(entry["id"]))
    prefix = str(server.data_dir.resolve()) + "/"
    mounts = [
        line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if line.split()[1].startswith(prefix)
    ]
    for mountpoint in sorted(mounts, key=len, reverse=True):
        if _run_quiet("umount", mountpoint)[0] != 0:
            _run_quiet("umount", "--lazy", mountpoint)
    sandboxes = server.data_dir / "sandboxes"
    ids = [p.name for p in sandboxes.iterdir()] if sandboxes.is_dir() else []
    if server.memory_cgroup:
        for controller in Path("/sys/fs/cgroup").iterdir():
            parent = controller / server.memory_cgroup.lstrip("/") / "workspace"
            for sandbox_id in ids:
                with contextlib.suppress(OSError):
                    (parent / sandbox_id).rmdir()
    shutil.rmtree(server.data_dir, ignore_errors=True)
