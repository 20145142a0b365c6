"""Starting and stopping a live `workspace serve` on loopback with a private data dir."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


@dataclass
class LiveServer:
    url: str
    api_key: str | None
    data_dir: Path
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def workspace_command() -> list[str]:
    exe = Path(sys.executable).with_name("workspace")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "workspace_server"]


def data_root(prefix: str = "ws-test-") -> Path:
    """A fresh directory for a data dir: sandboxes run as an unprivileged uid, which must be
    able to walk down to their root, so it is 0755 (pytest's tmp_path is 0700)."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    root.chmod(0o755)
    return root


def start_server(
    data_dir: Path,
    api_key: str | None = None,
    extra: list[str] | None = None,
    env: dict[str, str] | None = None,
    wrapper: list[str] | None = None,
    port: int | None = None,
) -> LiveServer:
    """`port`: a given one (a restart that clients must find again at the same address)."""
    port = port or free_port()
    log_path = data_dir.with_suffix(".log")
    cmd = [
        *(wrapper or []),
        *workspace_command(),
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
    ]
    if api_key:
        cmd += ["--api-key", api_key]
    cmd += extra or []
    full_env = {**os.environ, **(env or {})}
    full_env.pop("WORKSPACE_API_KEY", None)
    log = open(log_path, "ab")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=full_env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{log_path.read_text()}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return LiveServer(url, api_key, data_dir, proc, log_path)
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"server did not become healthy:\n{log_path.read_text()}")


def stop_server(server: LiveServer, sig: int = signal.SIGTERM) -> None:
    if server.process.poll() is None:
        server.process.send_signal(sig)
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
