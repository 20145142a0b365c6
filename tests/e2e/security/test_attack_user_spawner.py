"""Attacks by sandbox code on the agent's user spawner.

The agent forks a helper before it starts any thread; the helper drops to the sandbox
user (uid 1000) and starts every user command (vfork), reporting pids and exits to the
agent over a socket pair. It shares its uid with the code it starts, so that code can
signal it. What it must never be able to do: take over the helper's link to the agent,
gain privileges when the helper is gone, or stop the sandbox from answering.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.e2e.security.attack_support import assert_sandbox_answers, py, sh

HIJACK_SPAWNER = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
spawners = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open("/proc/%s/status" % pid) as f:
            status = dict(line.split(":", 1) for line in f.read().splitlines() if ":" in line)
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            cmdline = f.read()
    except OSError:
        continue
    if int(pid) != 1 and status["PPid"].strip() == "1" and b"agent.py" in cmdline:
        spawners.append(int(pid))
print("spawners", spawners)
for pid in spawners:
    print("attach", libc.ptrace(16, pid, 0, 0), ctypes.get_errno())
    pidfd = libc.syscall(434, pid, 0)  # pidfd_open
    for fd in range(3, 12):
        got = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd
        if got >= 0:
            print("STOLE", fd)
    try:
        open("/proc/%d/mem" % pid, "rb").read(1)
        print("READ mem")
    except OSError as exc:
        print("mem denied", exc.errno)
"""


def test_attack_sandbox_user_hijacks_user_spawner(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    """The agent's user spawner runs as uid 1000 like user code, but it changed uid from
    root, so it is not dumpable: user code can neither trace it nor steal its descriptors
    (its link to the agent) with pidfd_getfd."""
    answer = py(api, sandbox["id"], HIJACK_SPAWNER)
    out = answer["stdout"]
    assert "spawners [" in out and "spawners []" not in out, answer
    assert "attach -1 1" in out and "STOLE" not in out and "READ" not in out, answer
    assert sh(api, sandbox["id"], "echo alive")["stdout"] == "alive\n"


def test_attack_user_code_kills_the_user_spawner(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    """Killing the helper (its parent) only makes the agent start user commands itself:
    they still run as uid 1000 with no capabilities, no_new_privs and seccomp."""
    killed = sh(api, sandbox["id"], "sleep 0.3; kill -9 $PPID; echo killed")
    assert killed["stdout"] == "killed\n", killed
    assert_sandbox_answers(api, sandbox["id"])
    status = sh(api, sandbox["id"], "grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' /proc/self/status")["stdout"]
    fields = dict(line.split(":\t", 1) for line in status.splitlines())
    assert fields["Uid"].split() == ["1000"] * 4, status
    assert int(fields["CapEff"], 16) == 0 and fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2", status
    # Root commands are unaffected.
    assert sh(api, sandbox["id"], "id -u", user="root")["stdout"] == "0\n"


def test_attack_user_code_stops_the_user_spawner(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    def user_command(script: str) -> httpx.Response:
        try:
            return api.post(
                f"/sandboxes/{sandbox['id']}/processes/run",
                json={"command": "bash", "args": ["-c", script], "timeout": 1},
                timeout=7,
            )
        except httpx.TimeoutException as exc:
            raise AssertionError(f"{script!r} hung past its 1 s timeout (and the server's 5 s margin)") from exc

    stopper = user_command("kill -STOP $PPID; echo stopped")
    assert stopper.status_code == 200 and stopper.json()["stdout"] == "stopped\n", stopper.text
    after = user_command("echo after")
    assert after.status_code == 200 and after.json()["stdout"] == "after\n", after.text


def test_attack_user_code_kills_the_user_spawner_and_hijacks_its_successor(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    """The agent restarts a killed spawner (a fresh interpreter that starts as root and
    drops to the user itself): the successor is just as untraceable, and commands go back
    to the fast path through it."""
    sh(api, sandbox["id"], "sleep 0.3; kill -9 $PPID")
    deadline = time.monotonic() + 10
    while True:
        listed = sh(api, sandbox["id"], "ps -o user=,args= --ppid 1", user="root")["stdout"]
        restarted = any(line.split()[0] == "user" and "--spawner" in line for line in listed.splitlines())
        if restarted or time.monotonic() > deadline:  # (it starts as root, then drops to the user)
            break
        time.sleep(0.1)
    assert restarted, listed
    out = py(api, sandbox["id"], HIJACK_SPAWNER)["stdout"]
    assert "spawners [" in out and "spawners []" not in out, out
    assert "attach -1 1" in out and "STOLE" not in out and "READ" not in out, out
    status = sh(api, sandbox["id"], "grep -E '^Uid:' /proc/self/status; cat /proc/self/oom_score_adj")
    assert "Uid:\t1000\t1000\t1000\t1000" in status["stdout"] and status["stdout"].endswith("500\n"), status
    assert sh(api, sandbox["id"], "ps -o args= -p $PPID")["stdout"].find("--spawner") >= 0  # started by it
