"""Resource-exhaustion attacks: fork bombs, memory bombs, disk fillers, CPU hogs.

Each attack runs in a sandbox with small limits and a bounded command timeout. After
each, the SAME server must still serve OTHER sandboxes (a new sandbox runs echo, /healthz
is 200), and the victim itself must still answer where its limits promise it (an
OOM-killed command dies alone; a full disk is an error, not a dead sandbox).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.e2e.security.attack_support import (
    assert_error,
    assert_sandbox_answers,
    assert_service_healthy,
    new_marker,
    output,
    py,
    run,
    sh,
)
from tests.support.live_server import LiveServer

MakeSandbox = Callable[..., dict[str, Any]]
# Beyond its size, a disk image holds at most its extent tree on the host (a few blocks).
IMAGE_METADATA = 256 << 10


def _host_processes_with(marker: str) -> list[str]:
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines() if marker in line and "ps -eo" not in line]


# --------------------------------------------------------------------------- processes


@pytest.mark.parametrize("bomb", ["bash", "python"])
def test_attack_fork_bomb_is_contained(
    api: httpx.Client, make_sandbox: MakeSandbox, workspace_server: LiveServer, bomb: str
) -> None:
    """A fork bomb hits the sandbox's pids limit; the command timeout kills its process
    group; the victim and the service answer afterwards.

    The bash bomb starts 0.3 s late on purpose: a bomb that fills the pids limit before the
    agent has started the command's supervisor threads races a known agent bug (covered by
    test_attack_fork_bomb_escaping_its_process_group_leaves_agent_answering)."""
    victim = make_sandbox(pids=64)
    if bomb == "bash":
        answer = sh(api, victim["id"], "sleep 0.3; :(){ :|:& };:; sleep 30", timeout=4, expect_status=None)
    else:
        answer = py(
            api,
            victim["id"],
            "import os, time\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        time.sleep(0.01)",
            timeout=4,
            expect_status=None,
        )
    assert answer["http_status"] == 408 and answer["code"] == "PROCESS_TIMEOUT", answer
    assert_sandbox_answers(api, victim["id"])
    count = sh(api, victim["id"], "ps -e --no-headers | wc -l")
    assert int(count["stdout"]) < 10, count  # the whole bomb died with its process group
    assert_service_healthy(api, workspace_server.url)


def _escaping_bomb(api: httpx.Client, sandbox_id: str, marker: str) -> dict[str, Any]:
    """Every child calls setsid(), leaving the command's process group: the command
    timeout cannot reach them; only the pids limit (and deleting the sandbox) can."""
    code = (
        "import os, sys, time\nwhile True:\n    try:\n        if os.fork() == 0:\n            os.setsid()\n"
        "    except OSError:\n        time.sleep(0.05)"
    )
    return run(api, sandbox_id, "python3", "-c", code, marker, timeout=3, expect_status=None)


def test_attack_fork_bomb_escaping_its_process_group_is_bounded(
    api: httpx.Client, make_sandbox: MakeSandbox, workspace_server: LiveServer
) -> None:
    marker = new_marker("bomb")
    victim = make_sandbox(pids=64)
    answer = _escaping_bomb(api, victim["id"], marker)
    assert answer["http_status"] == 408, answer
    time.sleep(1)
    # Bounded by the pids cgroup: never more than the limit on the host.
    assert len(_host_processes_with(marker)) <= 64
    assert_service_healthy(api, workspace_server.url)
    # Deleting the sandbox ends every one of them.
    started = time.monotonic()
    response = api.delete(f"/sandboxes/{victim['id']}", params={"force": "true"}, timeout=30)
    assert response.status_code == 204
    assert time.monotonic() - started < 15
    assert _host_processes_with(marker) == []


def test_attack_fork_bomb_escaping_its_process_group_leaves_agent_answering(
    api: httpx.Client, make_sandbox: MakeSandbox
) -> None:
    victim = make_sandbox(pids=64)
    _escaping_bomb(api, victim["id"], new_marker("bomb"))
    time.sleep(1)
    # While the pids limit is exhausted a request may fail, but with a clean error and
    # without losing the sandbox.
    response = api.get(f"/sandboxes/{victim['id']}/files/exists", params={"path": "/workspace"}, timeout=30)
    assert response.status_code != 503 or response.json()["code"] != "AGENT_NOT_CONNECTED", response.text
    state = api.get(f"/sandboxes/{victim['id']}").json()
    assert state["state"] == "running", state


def test_attack_open_file_flood_hits_nofile_limit(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    answer = py(
        api,
        sandbox["id"],
        "import os\nfds = []\ntry:\n    while True:\n"
        "        fds.append(os.open('/dev/null', os.O_RDONLY))\n"
        "except OSError as exc:\n    print(len(fds), exc.errno)",
    )
    opened, errno = answer["stdout"].split()
    assert int(opened) < 4096 and errno == "24", answer  # EMFILE
    assert_sandbox_answers(api, sandbox["id"])


# --------------------------------------------------------------------------- memory


def test_attack_memory_bomb_is_oom_killed_inside_its_sandbox(
    api: httpx.Client, make_sandbox: MakeSandbox, workspace_server: LiveServer
) -> None:
    """Allocating past memory_mb kills the allocating command only: the sandbox (and its
    agent) survive and run the next command; the server and other sandboxes are untouched."""
    victim = make_sandbox(memory_mb=128)
    answer = py(
        api,
        victim["id"],
        "chunks = []\nfor _ in range(64):\n    chunks.append(bytearray(16 << 20))\n"
        "print('ALLOCATED', len(chunks) * 16, 'MiB')",
        timeout=60,
        expect_status=None,
    )
    assert answer["http_status"] == 200, answer
    assert "ALLOCATED" not in answer["stdout"], answer
    assert answer["exit_code"] in (137, 1), answer  # SIGKILL by the OOM killer, or MemoryError
    assert_sandbox_answers(api, victim["id"])
    # The limit is per sandbox: the same allocation in a sandbox with room succeeds.
    roomy = make_sandbox(memory_mb=1536)
    ok = py(api, roomy["id"], "chunks = [bytearray(16 << 20) for _ in range(64)]\nprint('ALLOCATED')", timeout=60)
    assert "ALLOCATED" in ok["stdout"], ok
    assert workspace_server.process.poll() is None
    assert_service_healthy(api, workspace_server.url)


SPREAD_BOMB = """
import os, sys, time
if sys.argv[1] == "lower":
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("0")  # back down to the agent's own score: no privilege needed
for _ in range(160):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        block = bytearray(1 << 20)
        for offset in range(0, len(block), 4096):
            block[offset] = 1
        time.sleep(12)
        os._exit(0)
time.sleep(3)
print("ALLOCATED")
"""


def test_attack_memory_bomb_spread_over_many_processes_is_oom_killed(
    api: httpx.Client, make_sandbox: MakeSandbox, workspace_server: LiveServer
) -> None:
    """160 processes of 1 MiB each, every one smaller than the agent: the OOM killer still
    picks commands (oom_score_adj 500), the agent survives, and the kills are reported."""
    victim = make_sandbox(memory_mb=128)
    answer = run(api, victim["id"], "python3", "-c", SPREAD_BOMB, "keep", timeout=6, expect_status=None)
    assert answer["http_status"] in (200, 408), answer
    assert "ALLOCATED" not in answer.get("stdout", ""), answer
    # The bomb's children may still hold all of memory_mb (until they exit, 12 s at most):
    # the next command then waits for memory like any process there, but the agent (in
    # its own cgroup above the commands') answers, and the command runs.
    assert_sandbox_answers(api, victim["id"])
    assert api.get(f"/sandboxes/{victim['id']}").json()["oom_kills"] > 0
    assert_service_healthy(api, workspace_server.url)


def test_attack_memory_bomb_with_lowered_oom_score_leaves_agent_alive(
    api: httpx.Client, make_sandbox: MakeSandbox
) -> None:
    """The bomb's processes lower their OOM score to the agent's own. The agent lives in a
    memory cgroup above theirs (memory_mb is theirs alone), so no OOM among them can take
    it: it keeps answering at once, and commands run again once memory is free."""
    victim = make_sandbox(memory_mb=128)
    run(api, victim["id"], "python3", "-c", SPREAD_BOMB, "lower", timeout=6, expect_status=None)
    state = api.get(f"/sandboxes/{victim['id']}").json()
    assert state["state"] == "running", state
    # Served by the agent itself, no new process: answers while the bomb holds the memory.
    written = api.put(f"/sandboxes/{victim['id']}/files", params={"path": "/workspace/alive"}, content=b"yes")
    assert written.status_code == 200, written.text
    assert api.get(f"/sandboxes/{victim['id']}/files", params={"path": "/workspace/alive"}).content == b"yes"
    # A new command is the OOM killer's first choice while the bomb's processes (score
    # lowered) hold the memory; they exit after 12 s, and then commands run again.
    deadline = time.monotonic() + 40
    while True:
        answer = run(api, victim["id"], "echo", "victim-alive", expect_status=None)
        if answer.get("stdout") == "victim-alive\n" or time.monotonic() > deadline:
            break
        assert answer.get("exit_code") == 137, answer  # killed for memory, nothing else
        time.sleep(1)
    assert answer.get("stdout") == "victim-alive\n", answer


# --------------------------------------------------------------------------- disk


def test_attack_disk_filler_stops_at_quota(
    api: httpx.Client, make_sandbox: MakeSandbox, workspace_server: LiveServer
) -> None:
    """/workspace, /tmp, /var/tmp, /home and /root share one disk image of disk_mb: filling
    it fails with ENOSPC at the quota; the sandbox answers and recovers once files are removed."""
    victim = make_sandbox(disk_mb=64)
    answer = sh(
        api,
        victim["id"],
        "dd if=/dev/zero of=/tmp/a bs=1M count=40 2>&1 | tail -1; "
        "dd if=/dev/zero of=/workspace/b bs=1M count=200 2>&1; echo rc=$?; "
        "df -k --output=size,used /workspace | tail -1",
        timeout=60,
    )
    assert "No space left on device" in answer["stdout"], answer
    size_kb, used_kb = (int(v) for v in answer["stdout"].split()[-2:])
    # The image is exactly disk_mb; the filesystem's own metadata takes a few percent of it.
    assert 0.85 * 64 * 1024 <= size_kb <= 64 * 1024 and used_kb <= size_kb, answer
    # Root cannot write past the quota either, nor can the files API.
    root = sh(api, victim["id"], "dd if=/dev/zero of=/root/c bs=1M count=8 2>&1; true", user="root")
    assert "No space left on device" in root["stdout"], root
    # A real filesystem keeps a few blocks of slack after ENOSPC: ask for clearly more.
    response = api.put(f"/sandboxes/{victim['id']}/files", params={"path": "/workspace/d"}, content=b"x" * (4 << 20))
    assert_error(response, 507, "DISK_QUOTA_EXCEEDED")
    assert_sandbox_answers(api, victim["id"])
    sh(api, victim["id"], "rm -f /tmp/a /workspace/b; dd if=/dev/zero of=/workspace/e bs=1M count=8 status=none")
    assert_service_healthy(api, workspace_server.url)


def test_attack_shm_filler_is_capped(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    answer = sh(
        api,
        sandbox["id"],
        "dd if=/dev/zero of=/dev/shm/fill bs=1M count=200 2>&1; du -m /dev/shm/fill | cut -f1; rm -f /dev/shm/fill",
    )
    assert "No space left on device" in answer["stdout"], answer
    assert int(answer["stdout"].split()[-1]) <= 64, answer
    assert_sandbox_answers(api, sandbox["id"])


def test_attack_upload_past_disk_quota_fails_cleanly(api: httpx.Client, make_sandbox: MakeSandbox) -> None:
    victim = make_sandbox(disk_mb=16)
    try:
        response = api.put(
            f"/sandboxes/{victim['id']}/files", params={"path": "/workspace/big"}, content=b"x" * (24 << 20), timeout=5
        )
    except httpx.TimeoutException as exc:
        raise AssertionError("the upload past the quota hung instead of failing with 507") from exc
    assert_error(response, 507, "DISK_QUOTA_EXCEEDED")
    assert_sandbox_answers(api, victim["id"])


@pytest.mark.parametrize("via", ["command", "files-api"])
def test_attack_root_writes_past_quota_into_run_workspace(
    api: httpx.Client, make_sandbox: MakeSandbox, workspace_server: LiveServer, via: str
) -> None:
    victim = make_sandbox(disk_mb=16)
    bundle = workspace_server.data_dir / "sandboxes" / victim["id"]
    bundle_run = bundle / "rw" / "run"
    try:
        if via == "command":
            sh(api, victim["id"], "dd if=/dev/zero of=/run/workspace/fill bs=1M count=32 2>&1; true", user="root")
        else:
            api.put(
                f"/sandboxes/{victim['id']}/files",
                params={"path": "/run/workspace/fill"},
                content=b"x" * (3 << 20),
                timeout=30,
            )
            api.put(
                f"/sandboxes/{victim['id']}/files",
                params={"path": "/run/workspace/fill2"},
                content=b"x" * (3 << 20),
                timeout=30,
            )
            sh(
                api,
                victim["id"],
                "cat /run/workspace/fill /run/workspace/fill2 /run/workspace/fill2 "
                "/run/workspace/fill2 /run/workspace/fill2 > /run/workspace/fill3; true",
                user="root",
            )
        # Everything the sandbox writes lands inside its disk image, which never grows past
        # the quota.
        image = bundle / "disk.img"
        assert image.stat().st_blocks * 512 <= (16 << 20) + IMAGE_METADATA, f"{image} grew past the quota"
        outside = [p for p in bundle.iterdir() if p.is_file() and p.name not in ("disk.img", "config.json", "init.pid")]
        assert not outside, outside
    finally:
        for path in bundle_run.glob("fill*"):
            path.unlink()


def test_attack_disk_filler_beyond_memory_limit_is_contained(
    api: httpx.Client, make_sandbox: MakeSandbox, workspace_server: LiveServer
) -> None:
    """The tmpfs disk is memory charged to the sandbox: filling more disk than memory_mb
    hits the memory limit. Whatever happens inside, it stays inside: other sandboxes and
    the server carry on, and the victim is reported honestly (running, or error)."""
    victim = make_sandbox(disk_mb=256, memory_mb=64)
    sh(
        api,
        victim["id"],
        "dd if=/dev/zero of=/workspace/fill bs=1M count=150 2>&1; true",
        timeout=60,
        expect_status=None,
    )
    state = api.get(f"/sandboxes/{victim['id']}").json()
    assert state["state"] in ("running", "error"), state
    if state["state"] == "error":
        assert state["error_message"], state
    assert workspace_server.process.poll() is None
    assert_service_healthy(api, workspace_server.url)


def test_attack_disk_filler_within_quota_but_beyond_memory_leaves_sandbox_running(
    api: httpx.Client, make_sandbox: MakeSandbox
) -> None:
    victim = make_sandbox(disk_mb=256, memory_mb=64)
    answer = sh(
        api,
        victim["id"],
        "dd if=/dev/zero of=/workspace/fill bs=1M count=150 status=none; echo rc=$?",
        timeout=60,
        expect_status=None,
    )
    assert answer.get("stdout", "").strip() == "rc=0", answer  # 150 MiB is within the 256 MiB quota
    assert_sandbox_answers(api, victim["id"])


# --------------------------------------------------------------------------- cpu


def test_attack_cpu_hog_is_throttled_to_its_quota(
    api: httpx.Client, make_sandbox: MakeSandbox, workspace_server: LiveServer
) -> None:
    """Four busy loops for 3 s in a cpu=0.5 sandbox get about 1.5 s of CPU in total,
    and meanwhile another sandbox answers promptly."""
    victim = make_sandbox(cpu=0.5)
    hog = (
        "import os, time\nend = time.monotonic() + 3\npids = []\nfor _ in range(4):\n    pid = os.fork()\n"
        "    if pid == 0:\n        while time.monotonic() < end:\n            pass\n        os._exit(0)\n"
        "    pids.append(pid)\nfor pid in pids:\n    os.waitpid(pid, 0)\n"
        "t = os.times()\nprint(t.children_user + t.children_system)"
    )
    result: dict[str, Any] = {}

    def hog_thread() -> None:
        with httpx.Client(base_url=workspace_server.url + "/api/v1", timeout=60) as client:
            result.update(py(client, victim["id"], hog, timeout=30))

    thread = threading.Thread(target=hog_thread)
    thread.start()
    try:
        time.sleep(0.5)
        other = make_sandbox()
        started = time.monotonic()
        echo = run(api, other["id"], "echo", "responsive")
        assert echo["stdout"] == "responsive\n"
        assert time.monotonic() - started < 5
    finally:
        thread.join(60)
    cpu_seconds = float(result["stdout"])
    assert cpu_seconds < 0.5 * 3 * 1.5, result  # unthrottled, four loops would take ~3 s per core
    assert_sandbox_answers(api, victim["id"])
    assert_service_healthy(api, workspace_server.url)


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_attack_root_floods_the_agents_own_output_stays_on_its_disk(
    api: httpx.Client, make_sandbox: MakeSandbox, workspace_server: LiveServer, stream: str
) -> None:
    """Sandbox root can open the agent's stdout and stderr (/proc/1/fd/1, 2). They are a
    file on the sandbox's own disk image: a flood stops at disk_mb, the host's disk never
    sees it."""
    victim = make_sandbox(disk_mb=16)
    fd = 1 if stream == "stdout" else 2
    # The file itself is not sandbox root's to open; a copy of the agent's descriptor is
    # (pidfd_getfd: sandbox root may trace the agent, docs/security.md "Known limits").
    flood = f"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
pidfd = os.pidfd_open(1)
fd = libc.syscall(438, pidfd, {fd}, 0)  # pidfd_getfd
assert fd >= 0, os.strerror(ctypes.get_errno())
block = b"x" * (1 << 20)
try:
    for _ in range(48):
        os.write(fd, block)
    print("wrote 48 MiB")
except OSError as exc:
    print("stopped:", exc.strerror)
"""
    answer = py(api, victim["id"], flood, user="root", timeout=60)
    assert "No space left" in output(answer), answer
    bundle = workspace_server.data_dir / "sandboxes" / victim["id"]
    image = bundle / "disk.img"
    assert image.stat().st_blocks * 512 <= (16 << 20) + IMAGE_METADATA, f"{image} grew past the quota"
    on_host = {p.name: p.stat().st_blocks * 512 for p in bundle.iterdir() if p.is_file() and p.name != "disk.img"}
    assert all(size <= 64 << 10 for size in on_host.values()), on_host
    assert_sandbox_answers(api, victim["id"])
