"""What privileges a sandboxed process holds: capabilities, no_new_privs, seccomp, ids."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from websockets.sync.client import connect

from tests.e2e.security.attack_support import run, sh
from tests.support.live_server import LiveServer

# CAP_CHOWN, CAP_DAC_OVERRIDE, CAP_FOWNER, CAP_FSETID, CAP_KILL, CAP_SETGID, CAP_SETUID,
# CAP_NET_BIND_SERVICE: the agent's set (oci_config.AGENT_CAPABILITIES).
AGENT_CAPS = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 10)
NEVER_HELD = {
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_CHROOT": 18,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_NICE": 23,
    "CAP_SYS_RESOURCE": 24,
    "CAP_SYS_TIME": 25,
    "CAP_MKNOD": 27,
    "CAP_AUDIT_WRITE": 29,
    "CAP_SETFCAP": 31,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_BPF": 39,
}


def _status(text: str) -> dict[str, str]:
    fields = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def test_security_user_command_has_no_capabilities(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    status = _status(sh(api, sandbox["id"], "cat /proc/self/status")["stdout"])
    for field in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        assert int(status[field], 16) == 0, (field, status[field])
    assert int(status["CapBnd"], 16) == AGENT_CAPS
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"
    assert status["Uid"].split() == ["1000"] * 4
    assert status["Gid"].split() == ["1000"] * 4
    assert status["Groups"] == ""  # no supplementary groups


def test_security_root_command_holds_only_the_agent_capabilities(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    status = _status(sh(api, sandbox["id"], "cat /proc/self/status", user="root")["stdout"])
    for field in ("CapPrm", "CapEff", "CapBnd"):
        value = int(status[field], 16)
        assert value == AGENT_CAPS, (field, status[field])
        for name, bit in NEVER_HELD.items():
            assert not value & (1 << bit), name
    assert int(status["CapAmb"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"


def test_security_agent_pid_1_is_confined_like_root(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    status = _status(sh(api, sandbox["id"], "cat /proc/1/status", user="root")["stdout"])
    assert int(status["CapEff"], 16) == AGENT_CAPS
    assert status["NoNewPrivs"] == "1" and status["Seccomp"] == "2"
    # root inside is an unprivileged host uid: the first of this sandbox's own range of 65536
    # (from 100000 on), the sandbox user that plus 1000.
    maps = sh(api, sandbox["id"], "cat /proc/self/uid_map /proc/self/gid_map")["stdout"].split()
    inside, host, size = maps[:3]
    assert maps[3:] == maps[:3]
    assert (inside, size) == ("0", "65536")
    assert int(host) >= 100000 and (int(host) - 100000) % 65536 == 0


def test_security_streamed_command_has_no_capabilities(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    """The streaming route spawns through the same path: same confinement."""
    body = {"command": "grep", "args": ["-E", "^(CapEff|NoNewPrivs|Seccomp):", "/proc/self/status"], "timeout": 10}
    text = ""
    with api.stream("POST", f"/sandboxes/{sandbox['id']}/processes/stream", json=body, timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data:"):
                text += str(json.loads(line[5:]).get("data", ""))
    status = _status(text)
    assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", text


@pytest.mark.parametrize("user", ["user", "root"])
def test_security_file_descriptor_and_process_limits(api: httpx.Client, sandbox: dict[str, Any], user: str) -> None:
    answer = sh(api, sandbox["id"], "ulimit -n; ulimit -Hn", user=user)
    assert answer["stdout"].split() == ["4096", "4096"]


@pytest.mark.parametrize("user", ["user", "root"])
def test_security_command_environment_is_not_the_servers(api: httpx.Client, sandbox: dict[str, Any], user: str) -> None:
    """Commands get a fixed environment (plus the caller's env), nothing of the server's."""
    env = sh(api, sandbox["id"], "env; tr '\\0' '\\n' < /proc/1/environ", user=user)["stdout"]
    names = {line.split("=", 1)[0] for line in env.splitlines() if "=" in line}
    assert not {n for n in names if n.startswith(("WORKSPACE_API", "PYTEST", "VIRTUAL_ENV", "SSH_", "SUDO_"))}
    assert names <= {"PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "WORKSPACE_SANDBOX_ID", "PWD", "SHLVL", "_"}


def test_security_pty_shell_has_no_capabilities(workspace_server: LiveServer, sandbox: dict[str, Any]) -> None:
    url = workspace_server.url.replace("http://", "ws://") + f"/api/v1/sandboxes/{sandbox['id']}/pty"
    seen = ""
    with connect(url, open_timeout=10) as ws:
        assert '"ready"' in str(ws.recv(timeout=10))
        ws.send(b"grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' /proc/self/status; echo END-OF-STATUS\n")
        deadline = time.monotonic() + 15
        while "END-OF-STATUS\r\n" not in seen.replace("echo END-OF-STATUS\r\n", "") and time.monotonic() < deadline:
            frame = ws.recv(timeout=15)
            if isinstance(frame, bytes):
                seen += frame.decode(errors="replace")
    status = {}
    for line in seen.splitlines():
        key, sep, value = line.partition(":")
        if sep and key in ("Uid", "CapEff", "NoNewPrivs", "Seccomp"):
            status[key] = value.strip()
    assert status["Uid"].split() == ["1000"] * 4, seen
    assert int(status["CapEff"], 16) == 0 and status["NoNewPrivs"] == "1" and status["Seccomp"] == "2", seen


def test_security_commands_are_the_oom_killers_first_choice(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    """User commands start with oom_score_adj 500 (set by the user spawner before exec);
    the agent keeps 0. See test_attack_resources.py for a command lowering its own score."""
    answer = run(api, sandbox["id"], "cat", "/proc/self/oom_score_adj", "/proc/1/oom_score_adj")
    assert answer["stdout"].split() == ["500", "0"], answer


def test_security_every_command_starts_as_the_oom_killers_first_choice(
    api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    seen = [
        run(api, sandbox["id"], "cat", "/proc/self/oom_score_adj", user="root")["stdout"].strip() for _ in range(20)
    ]
    sh(api, sandbox["id"], "sleep 0.2; kill -9 $PPID")  # the user spawner: commands now take the slow path
    seen += [run(api, sandbox["id"], "cat", "/proc/self/oom_score_adj")["stdout"].strip() for _ in range(40)]
    assert seen == ["500"] * 60, seen
