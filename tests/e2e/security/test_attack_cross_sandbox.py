"""Attacks from one sandbox on another (and on the host's processes).

Sandbox A holds a marker in its files (/workspace, /tmp, /dev/shm, home), in a running
process's argv and environment, in an abstract Unix socket and in SysV IPC objects.
Sandbox B, as the sandbox user and as sandbox root, looks for it everywhere: ps, /proc,
/tmp, IPC, abstract sockets; and tries to kill A's processes. Each check first proves
that A itself can see its own marker, so a pass means isolation, not a broken setup.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.security.attack_support import new_marker, output, py, sh
from tests.support.live_server import LiveServer

SECRET = "victim-secret.txt"
ABSTRACT_LISTENER = """
import os, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind("\\0" + sys.argv[1])
s.listen(1)
f = socket.socket(socket.AF_UNIX)
f.bind("/tmp/" + sys.argv[1] + ".sock")
f.listen(1)
time.sleep(300)
"""

CONNECT = """
import socket, sys
for name in ("\\0" + sys.argv[1], "/tmp/" + sys.argv[1] + ".sock"):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(name)
        print("CONNECTED", repr(name))
    except OSError as exc:
        print("refused", repr(name), exc.errno)
"""


@pytest.fixture
def victim(api: httpx.Client, make_sandbox: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """Sandbox A, seeded with a marker everywhere a neighbour might look."""
    sandbox = make_sandbox()
    marker = new_marker("victim")
    sid = sandbox["id"]
    sh(
        api,
        sid,
        f"""
        set -e
        for d in /workspace /tmp /var/tmp /dev/shm /home/user; do echo {marker} > $d/{SECRET}; done
        MARKER_ENV={marker} setsid python3 -c 'import time; time.sleep(300)' {marker} </dev/null >/dev/null 2>&1 &
        setsid python3 -c '{ABSTRACT_LISTENER}' {marker} </dev/null >/dev/null 2>&1 &
        ipcmk -M 4096 >/dev/null; ipcmk -Q >/dev/null; ipcmk -S 1 >/dev/null
        for i in $(seq 50); do [ -S /tmp/{marker}.sock ] && break; sleep 0.1; done
    """,
    )
    sh(api, sid, f"echo {marker} > /root/{SECRET}", user="root")
    # A sees its own marker everywhere: the checks below are meaningful.
    seen = sh(
        api,
        sid,
        f"ps -eo args; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c {marker}; "
        f"ipcs -m -q -s | grep -c 0x; cat /tmp/{SECRET} /dev/shm/{SECRET}",
    )
    assert seen["stdout"].count(marker) >= 5, seen
    own = py(api, sid, CONNECT.replace("sys.argv[1]", repr(marker)))
    assert own["stdout"].count("CONNECTED") == 2, own
    return {**sandbox, "marker": marker}


@pytest.mark.parametrize("user", ["user", "root"])
def test_attack_read_other_sandbox_files(
    api: httpx.Client, make_sandbox: Callable[..., dict[str, Any]], victim: dict[str, Any], user: str
) -> None:
    attacker = make_sandbox()
    marker = victim["marker"]
    answer = sh(
        api,
        attacker["id"],
        f"cat /workspace/{SECRET} /tmp/{SECRET} /dev/shm/{SECRET} /home/user/{SECRET} /root/{SECRET} 2>&1; "
        f"grep -rl {marker} /workspace /tmp /var/tmp /dev/shm /home /root /run 2>/dev/null; "
        f"find / \\( -path /proc -o -path /sys -o -path /usr \\) -prune -o -name '{SECRET}' -print "
        "2>/dev/null; true",
        user=user,
        timeout=60,
    )
    assert marker not in answer["stdout"], answer
    assert f"/{SECRET}\n" not in answer["stdout"], answer
    for path in (f"/workspace/{SECRET}", f"/tmp/{SECRET}", f"/root/{SECRET}"):
        response = api.get(f"/sandboxes/{attacker['id']}/files", params={"path": path})
        assert response.status_code == 404 and marker not in response.text


@pytest.mark.parametrize("user", ["user", "root"])
def test_attack_list_other_sandbox_processes(
    api: httpx.Client, make_sandbox: Callable[..., dict[str, Any]], victim: dict[str, Any], user: str
) -> None:
    attacker = make_sandbox()
    marker = victim["marker"]
    answer = sh(
        api,
        attacker["id"],
        "ps -eo pid,user,args; cat /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null | tr '\\0' ' '; "
        "ls /proc | grep -c '^[0-9]'",
        user=user,
    )
    assert marker not in answer["stdout"], answer
    # Only the attacker's own agent and this command tree are visible.
    assert int(answer["stdout"].split()[-1]) < 10, answer


@pytest.mark.parametrize("user", ["user", "root"])
def test_attack_list_host_processes(api: httpx.Client, sandbox: dict[str, Any], user: str) -> None:
    answer = sh(api, sandbox["id"], "ps -eo pid,args; cat /proc/1/cmdline | tr '\\0' ' '", user=user)
    for host_word in ("workspace serve", "pytest", "runc", "systemd", "sshd"):
        assert host_word not in answer["stdout"], answer
    # PID 1 is the sandbox's own agent.
    assert "/opt/workspace-agent/agent.py" in answer["stdout"]


@pytest.mark.parametrize("user", ["user", "root"])
def test_attack_kill_other_sandbox_processes(
    api: httpx.Client, make_sandbox: Callable[..., dict[str, Any]], victim: dict[str, Any], user: str
) -> None:
    attacker = make_sandbox()
    marker = victim["marker"]
    # (The attacker's own answer does not matter here: killing every process of its uid
    # includes its own agent's user spawner; see test_attack_user_spawner.py.)
    sh(api, attacker["id"], "kill -9 -1; pkill -9 -f python3; pkill -9 sleep; true", user=user, expect_status=None)
    still = sh(api, victim["id"], f"ps -eo args | grep -c '[{marker[0]}]{marker[1:]}'; true")
    assert int(still["stdout"].strip()) >= 1, still


def test_attack_connect_other_sandbox_abstract_socket(
    api: httpx.Client, make_sandbox: Callable[..., dict[str, Any]], victim: dict[str, Any]
) -> None:
    """Abstract Unix sockets belong to the network namespace: A's are not reachable from B."""
    attacker = make_sandbox()
    for user in ("user", "root"):
        answer = py(api, attacker["id"], CONNECT.replace("sys.argv[1]", repr(victim["marker"])), user=user)
        assert "CONNECTED" not in answer["stdout"], answer
        assert answer["stdout"].count("refused") == 2, answer


def test_attack_read_other_sandbox_ipc(
    api: httpx.Client, make_sandbox: Callable[..., dict[str, Any]], victim: dict[str, Any]
) -> None:
    """SysV shared memory, queues and semaphores belong to the IPC namespace."""
    attacker = make_sandbox()
    answer = sh(api, attacker["id"], "ipcs -m -q -s", user="root")
    assert "0x" not in answer["stdout"], answer
    own = sh(api, victim["id"], "ipcs -m -q -s")
    assert own["stdout"].count("0x") == 3, own


def test_attack_other_sandbox_hostname_and_ids_differ(
    api: httpx.Client, make_sandbox: Callable[..., dict[str, Any]], victim: dict[str, Any]
) -> None:
    attacker = make_sandbox()
    mine = sh(api, attacker["id"], "hostname; cat /proc/self/uid_map")
    theirs = sh(api, victim["id"], "hostname; cat /proc/self/uid_map")
    assert mine["stdout"].split()[0] == attacker["id"]
    assert theirs["stdout"].split()[0] == victim["id"]
    assert victim["id"] not in output(mine)
    # Each sandbox has a host uid range of its own: an escaped process would be a stranger
    # to every other sandbox's processes and files too.
    my_start, their_start = int(mine["stdout"].split()[2]), int(theirs["stdout"].split()[2])
    assert abs(my_start - their_start) >= 65536


def test_attack_neighbours_are_different_host_users(
    api: httpx.Client, workspace_server: LiveServer, make_sandbox: Callable[..., dict[str, Any]], victim: dict[str, Any]
) -> None:
    """Seen from the host: two sandboxes' agents, commands and files belong to different,
    unprivileged host uids (so even an escaped process could not signal, trace or read its
    neighbour's)."""
    attacker = make_sandbox()
    owners = {}
    for sandbox in (attacker, victim):
        sandbox_id = sandbox["id"]
        bundle = workspace_server.data_dir / "sandboxes" / sandbox_id
        agent_uid = host_uid_of(int((bundle / "init.pid").read_text()))
        command_uid = (
            int(sh(api, sandbox_id, "echo made > /workspace/owned; cat /proc/self/uid_map")["stdout"].split()[1]) + 1000
        )
        file_uid = (bundle / "rw" / "workspace" / "owned").stat().st_uid
        assert agent_uid >= 100000
        assert file_uid == command_uid == agent_uid + 1000
        owners[sandbox_id] = agent_uid
    assert abs(owners[attacker["id"]] - owners[victim["id"]]) >= 65536


def host_uid_of(pid: int) -> int:
    for line in (Path("/proc") / str(pid) / "status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for pid {pid}")
