"""Helpers for the reliability suite.

Every test here runs its OWN `workspace serve` on a private data dir (it kills, crashes and
restarts servers), looks at the host side of each sandbox directly (bundle dir, the mount of
its disk and the loop device under it, runc state, cgroups, processes), and cleans everything up even when it fails
half-way: `Harness.close()` kills the server's process group, force-deletes every runc
container of the data dir, unmounts what is left under the test's root, removes the
cgroups of every sandbox id the test ever saw, and deletes the root.

Only loopback traffic; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import httpx
from websockets.asyncio.client import connect

from tests.support.http_api import asse_events as asse_events
from tests.support.http_api import run, wait_until
from tests.support.http_api import sse_events as sse_events
from tests.support.live_server import LiveServer, start_server

T = TypeVar("T")

CGROUP_ROOT = Path("/sys/fs/cgroup")
SANDBOX_ID = re.compile(r"sbx-[0-9a-f]{16}")
# Every sandbox id this test process was handed, so cleanup can find its cgroups even after
# the server forgot the sandbox (a leaked cgroup has no bundle dir and no runc state left).
CREATED_IDS: set[str] = set()
STOP_TIMEOUT = 30.0  # a SIGTERMed server must be gone by then (its own grace is 10 s)
PORT_RETRIES = 3  # start_server picks a free port, then the server binds it: a race we retry


# --------------------------------------------------------------------------- host views


def memory_cgroup(pid: int | str = "self") -> str:
    """The cgroup path of `pid` in the memory hierarchy (v1), or its unified path (v2)."""
    unified = "/"
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            return path
        if controllers == "":
            unified = path
    return unified


def sandbox_cgroup_parent(pid: int | str = "self") -> str:
    """Where the server puts sandbox cgroups: <its memory cgroup>/workspace."""
    return memory_cgroup(pid).rstrip("/") + "/workspace"


def sandbox_cgroup_dirs(parent: str, ids: Iterable[str]) -> list[str]:
    """Cgroup directories (any controller, v1 or v2) still present for these sandboxes."""
    hierarchies = [CGROUP_ROOT, *sorted(p for p in CGROUP_ROOT.iterdir() if p.is_dir() and not p.is_symlink())]
    found = []
    for sandbox_id in ids:
        for hierarchy in hierarchies:
            path = hierarchy / parent.lstrip("/") / sandbox_id
            if path.is_dir():
                found.append(str(path))
    return sorted(set(found))


def sandbox_processes(ids: Iterable[str]) -> list[tuple[int, str]]:
    """Live host processes (pid, cmdline) whose cgroup belongs to one of these sandboxes.

    Zombies are left out: a killed sandbox init is reparented to the host's PID 1, and
    reaping it is that process's job (on some hosts it reaps only now and then)."""
    markers = [f"/workspace/{sandbox_id}" for sandbox_id in ids]
    if not markers:
        return []
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cgroups = (entry / "cgroup").read_text()
            if not any(marker in cgroups for marker in markers) or not pid_alive(int(entry.name)):
                continue
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue  # exited while we looked
        found.append((int(entry.name), cmdline))
    return sorted(found)


def mounts_under(path: Path) -> list[str]:
    """Mount points at or below `path` (from /proc/mounts)."""
    prefix = str(path)
    points = []
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        if len(fields) < 2:
            continue
        point = fields[1].replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return points


def loop_devices_under(path: Path) -> list[str]:
    """Loop devices (`NAME BACK-FILE`) whose backing file is under `path` (sandbox disk images)."""
    result = subprocess.run(
        ["losetup", "--list", "--noheadings", "-O", "NAME,BACK-FILE"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return [line.strip() for line in result.stdout.splitlines() if str(path) + "/" in line]


def runc_ids(data_dir: Path) -> list[str]:
    """Containers runc still knows about in this data dir's runc state."""
    state = data_dir / "runc"
    if not state.is_dir():
        return []
    result = subprocess.run(
        ["runc", "--root", str(state), "list", "-q"], capture_output=True, text=True, timeout=30, check=False
    )
    return sorted(line.strip() for line in result.stdout.splitlines() if line.strip())


def runc_status(data_dir: Path, sandbox_id: str) -> str | None:
    result = subprocess.run(
        ["runc", "--root", str(data_dir / "runc"), "state", sandbox_id],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if result.returncode != 0:
        return None
    return str(json.loads(result.stdout).get("status"))


def bundle_ids(data_dir: Path) -> list[str]:
    sandboxes = data_dir / "sandboxes"
    return sorted(p.name for p in sandboxes.iterdir()) if sandboxes.is_dir() else []


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def thread_count(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError(f"no Threads for pid {pid}")


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --------------------------------------------------------------------------- waiting


def settle(probe: Callable[[], int], target: int, timeout: float = 5.0) -> int:
    """`probe()`, once it is back at or under `target` (or whatever it is after `timeout`)."""
    deadline = time.monotonic() + timeout
    value = probe()
    while value > target and time.monotonic() < deadline:
        time.sleep(0.05)
        value = probe()
    return value


def settle_fds(pid: int, target: int, timeout: float = 5.0) -> int:
    """The server's fd count, once it is back at or under `target` (or after `timeout`)."""
    return settle(lambda: fd_count(pid), target, timeout)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


# --------------------------------------------------------------------------- API helpers


def fill_file_system(directory: Path, name: str = "filler") -> None:
    """Take every free block of the file system holding `directory` (as another program on
    the host would), in files named `name`-big and `name`-small."""
    for suffix, block in (("big", 1 << 16), ("small", 1 << 10)):
        try:
            with open(directory / f"{name}-{suffix}", "wb", buffering=0) as filler:
                while True:
                    filler.write(b"\0" * block)
        except OSError:
            pass  # ENOSPC: that is the point


def unfill_file_system(directory: Path, name: str = "filler") -> None:
    for suffix in ("big", "small"):
        (directory / f"{name}-{suffix}").unlink(missing_ok=True)


def envelope(response: httpx.Response) -> dict[str, Any]:
    """The error envelope of a failed response (asserting that it is one)."""
    body = response.json()
    assert set(body) >= {"code", "message", "details"}, body
    return dict(body)


def create(client: httpx.Client, **body: Any) -> dict[str, Any]:
    response = client.post("/sandboxes", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    CREATED_IDS.add(created["id"])
    assert created["state"] == "running", created
    return created


def sh(client: httpx.Client, sandbox_id: str, script: str, **options: Any) -> str:
    result = run(client, sandbox_id, "sh", "-c", script, **options)
    assert result["exit_code"] == 0, result
    return str(result["stdout"])


def api_processes(client: httpx.Client, sandbox_id: str) -> list[dict[str, Any]]:
    response = client.get(f"/sandboxes/{sandbox_id}/processes")
    assert response.status_code == 200, response.text
    return list(response.json()["processes"])


def ps_commands(client: httpx.Client, sandbox_id: str) -> list[str]:
    """Every process in the sandbox as `ps` inside it sees them (args), minus ps itself."""
    out = run(client, sandbox_id, "ps", "-eo", "args=")["stdout"]
    return [line.strip() for line in out.splitlines() if line.strip() and not line.strip().startswith("ps ")]


def list_workspace(client: httpx.Client, sandbox_id: str, path: str = "/workspace") -> list[str]:
    response = client.get(f"/sandboxes/{sandbox_id}/files/list", params={"path": path})
    assert response.status_code == 200, response.text
    return [f["name"] for f in response.json()["files"]]


def assert_running_means_usable(client: httpx.Client) -> list[str]:
    """The invariant: every sandbox the API calls running answers a command."""
    response = client.get("/sandboxes", params={"state": "running"})
    assert response.status_code == 200, response.text
    running = [s["id"] for s in response.json()["sandboxes"]]
    for sandbox_id in running:
        result = client.post(f"/sandboxes/{sandbox_id}/processes/run", json={"command": "true"}, timeout=10)
        assert result.status_code == 200 and result.json()["exit_code"] == 0, (
            f"{sandbox_id} is reported running but does not answer: {result.status_code} {result.text}"
        )
    return running


async def pty_round_trip(ws_url: str, timeout: float) -> None:
    """Open a PTY running /bin/sh, see a command's output echo back, kill it and see it exit."""
    async with connect(ws_url, open_timeout=timeout) as ws:
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready", ready
        await ws.send(b"echo pty-'ok'\n")
        seen = b""
        while b"pty-ok" not in seen:
            frame = await asyncio.wait_for(ws.recv(), timeout)
            if isinstance(frame, bytes):
                seen += frame
        await ws.send(json.dumps({"type": "kill"}))
        while True:
            frame = await asyncio.wait_for(ws.recv(), timeout)
            if isinstance(frame, str):
                assert json.loads(frame)["type"] == "exit", frame
                return


def metric_samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse Prometheus text into {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def pool_full(h: Harness, per_template: int) -> bool:
    """The warm pool holds `per_template` ready sandboxes for every template (per /metrics)."""
    listed = httpx.get(h.api_url + "/templates", timeout=10).json()["templates"]
    templates = [t["name"] for t in listed if t.get("source", "builtin") == "builtin"]  # images: --pool only
    samples = metric_samples(httpx.get(h.url + "/metrics", timeout=10).text)
    return all(samples.get(("workspace_pool_size", (("template", t),))) == per_template for t in templates)


def wait_pool_full(h: Harness, per_template: int, timeout: float = 30.0) -> None:
    wait_until(lambda: pool_full(h, per_template), timeout, 0.1, "the warm pool to fill")


# --------------------------------------------------------------------------- the harness


class Harness:
    """One private server (restartable) on one private data dir, and its cleanup."""

    def __init__(self, name: str) -> None:
        self.root = Path(tempfile.mkdtemp(prefix=f"ws-rel-{name}-"))
        self.root.chmod(0o755)  # sandbox roots run as an unprivileged uid that must reach the data dir
        self.data_dir = self.root / "data"
        self.server: LiveServer | None = None
        self.cgroup_parent = sandbox_cgroup_parent()  # the server inherits our memory cgroup
        self.seen_ids: set[str] = set()
        self.own_mounts: list[Path] = []  # file systems the test itself mounted (unmounted last)

    # -- server lifecycle
    def start(
        self,
        pool_size: int = 0,
        extra: list[str] | None = None,
        wrapper: list[str] | None = None,
        same_port: bool = False,
    ) -> LiveServer:
        """`wrapper` runs the server under a command (say `prlimit --nofile=...`); `same_port`:
        listen where the previous server did (its clients reconnect there)."""
        assert self.server is None or self.server.process.poll() is not None, "a server is already running"
        args = ["--pool-size", str(pool_size), *(extra or [])]
        port = int(self.url.rsplit(":", 1)[1]) if same_port and self.server is not None else None
        for attempt in range(PORT_RETRIES):
            try:
                self.server = start_server(self.data_dir, extra=args, wrapper=wrapper, port=port)
                break
            except RuntimeError as exc:
                if "address already in use" not in str(exc).lower() or attempt == PORT_RETRIES - 1:
                    raise
        assert self.server is not None
        self.cgroup_parent = sandbox_cgroup_parent(self.server.process.pid)
        return self.server

    @property
    def pid(self) -> int:
        assert self.server is not None
        return self.server.process.pid

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def api_url(self) -> str:
        return self.url + "/api/v1"

    def ws_url(self, path: str) -> str:
        return self.api_url.replace("http://", "ws://", 1) + path

    def client(self, timeout: float = 30.0) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=timeout)

    def async_client(self, timeout: float = 30.0, connections: int = 100) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        return httpx.AsyncClient(base_url=self.api_url, timeout=timeout, limits=limits)

    def crash(self) -> None:
        """kill -9 of the server process alone (not its group): sandboxes must outlive it."""
        assert self.server is not None
        self.note_ids()
        self.server.process.send_signal(signal.SIGKILL)
        self.server.process.wait(timeout=STOP_TIMEOUT)

    def terminate(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM; the server's exit status."""
        assert self.server is not None
        self.note_ids()
        self.server.process.send_signal(signal.SIGTERM)
        return self.server.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.server.log() if self.server is not None else ""

    def log_tail(self, lines: int = 40) -> str:
        kept = [line for line in self.log().splitlines() if not line.startswith(" ")]
        return "\n".join(kept[-lines:])

    # -- host views of this data dir
    def note_ids(self) -> None:
        self.seen_ids.update(bundle_ids(self.data_dir))
        self.seen_ids.update(runc_ids(self.data_dir))

    def init_pid(self, sandbox_id: str) -> int:
        return int((self.data_dir / "sandboxes" / sandbox_id / "init.pid").read_text().strip())

    def leftovers(self, ids: Iterable[str]) -> dict[str, list[Any]]:
        """What the host still holds for these sandboxes; empty lists when all is gone."""
        wanted = set(ids)
        self.seen_ids.update(wanted)
        return {
            "bundle dirs": sorted(wanted & set(bundle_ids(self.data_dir))),
            "runc containers": sorted(wanted & set(runc_ids(self.data_dir))),
            "mounts": [m for m in mounts_under(self.data_dir / "sandboxes") if any(i in m for i in wanted)],
            "loop devices": [d for d in loop_devices_under(self.data_dir) if any(i in d for i in wanted)],
            "cgroups": sandbox_cgroup_dirs(self.cgroup_parent, wanted),
            "processes": sandbox_processes(wanted),
        }

    def assert_no_leftovers(self, ids: Iterable[str], timeout: float = 5.0) -> None:
        wanted = set(ids)
        deadline = time.monotonic() + timeout
        while True:
            left = {k: v for k, v in self.leftovers(wanted).items() if v}
            if not left or time.monotonic() >= deadline:
                break
            time.sleep(0.1)
        assert not left, f"left behind: {left}"

    def assert_data_dir_empty(self) -> None:
        """No sandbox of any kind (user or warm) left in this data dir."""
        self.note_ids()
        assert bundle_ids(self.data_dir) == []
        assert runc_ids(self.data_dir) == []
        assert mounts_under(self.data_dir / "sandboxes") == []
        assert loop_devices_under(self.data_dir) == []
        self.assert_no_leftovers(self.seen_ids)

    # -- mounting (storage tests)
    def mount_tmpfs(self, target: Path, options: str) -> None:
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, f"ws-rel-{target.name}", str(target)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        self.own_mounts.append(target)

    def mount_ext4(self, target: Path, size_mb: int) -> None:
        """A small ext4 file system of its own at `target` (an image file beside it, loop-mounted
        with autoclear: the loop device goes with the unmount in close())."""
        image = self.root / f"{target.name}-fs.img"
        with open(image, "wb") as handle:
            handle.truncate(size_mb * 1024 * 1024)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], check=True, capture_output=True, timeout=60)
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-o", "loop", str(image), str(target)], check=True, capture_output=True, timeout=30)
        target.chmod(0o755)
        self.own_mounts.append(target)

    # -- cleanup
    def keep_log(self) -> None:
        """Copy the server log to $WS_RELIABILITY_LOG_DIR, if set (for debugging failures)."""
        target = os.environ.get("WS_RELIABILITY_LOG_DIR")
        if target and self.server is not None and self.server.log_path.exists():
            Path(target).mkdir(parents=True, exist_ok=True)
            shutil.copy(self.server.log_path, Path(target) / f"{self.root.name}.log")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.keep_log()
        if self.server is not None and self.server.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.server.process.pid, signal.SIGKILL)  # started with its own session
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.server.process.wait(timeout=STOP_TIMEOUT)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self.note_ids()
        self.seen_ids.update(CREATED_IDS)
        with contextlib.suppress(OSError):
            self.seen_ids.update(SANDBOX_ID.findall(self.log()))
        for sandbox_id in self.seen_ids | set(runc_ids(self.data_dir)):
            subprocess.run(
                ["runc", "--root", str(self.data_dir / "runc"), "delete", "--force", sandbox_id],
                capture_output=True,
                timeout=30,
                check=False,
            )
        deadline = time.monotonic() + 10  # killed processes of a CPU-throttled sandbox take a while to exit
        while (left := sandbox_processes(self.seen_ids)) and time.monotonic() < deadline:
            for pid, _ in left:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)
        own = {str(p) for p in self.own_mounts}
        for point in sorted(mounts_under(self.root), key=len, reverse=True):
            if point in own:
                continue
            if subprocess.run(["umount", point], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "--lazy", point], capture_output=True, check=False)
        for path in sandbox_cgroup_dirs(self.cgroup_parent, self.seen_ids):
            with contextlib.suppress(OSError):  # EBUSY: not ours after all (a live sandbox)
                os.rmdir(path)
        shutil.rmtree(self.data_dir, ignore_errors=True)
        for target in reversed(self.own_mounts):
            if subprocess.run(["umount", str(target)], capture_output=True, check=False).returncode != 0:
                subprocess.run(["umount", "--lazy", str(target)], capture_output=True, check=False)
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
