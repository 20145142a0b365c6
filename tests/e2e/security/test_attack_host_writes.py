"""Attacks that try to write the host's system directories from a sandbox.

/usr and /etc are the host's, bind-mounted read-only (nosuid, nodev); the root filesystem
skeleton and the agent's code are read-only too; and the files there belong to host uids
that are not mapped in the sandbox's user namespace. Every attempt, by command (as the
sandbox user and as sandbox root) and through the files API (which runs as sandbox root),
must fail and leave the host byte-for-byte unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.security.attack_support import assert_error, new_marker, sh, snapshot
from tests.support.live_server import LiveServer

AGENT_SOURCE = Path(__file__).resolve().parents[3] / "server" / "src" / "workspace_server" / "agent"
WATCHED = [
    Path("/etc/hostname"),
    Path("/etc/passwd"),
    Path("/etc/hosts"),
    Path("/etc/group"),
    Path("/etc/ld.so.preload"),
    Path("/etc/profile"),
    Path("/usr/bin/python3"),
]


def _shared_trees(server: LiveServer) -> dict[str, bytes | str | None]:
    """Every file of the read-only trees all sandboxes share (their /etc, the agent's code)."""
    tree: dict[str, bytes | str | None] = {}
    shared = sorted((server.data_dir / "runtime").glob("etc-*")) + sorted((server.data_dir / "runtime").glob("agent-*"))
    assert shared, "no shared /etc or agent directory found under the data dir"
    for root in shared:
        for path in sorted(root.rglob("*")):
            if path.is_symlink():
                tree[str(path)] = "-> " + str(path.readlink())
            elif path.is_file():
                tree[str(path)] = path.read_bytes()
            else:
                tree[str(path)] = None
    return tree


def _new_names(marker: str) -> list[Path]:
    name = marker.lower()
    return [
        Path("/usr/bin") / name,
        Path("/usr/local/bin") / name,
        Path("/usr/lib") / name,
        Path("/etc") / name,
        Path("/etc/cron.d") / name,
        AGENT_SOURCE / name,
    ]


@pytest.mark.parametrize("user", ["user", "root"])
def test_attack_write_host_system_dirs_by_command(
    api: httpx.Client, sandbox: dict[str, Any], workspace_server: LiveServer, user: str
) -> None:
    marker = new_marker("write")
    name = marker.lower()
    before = {path: snapshot(path) for path in WATCHED}
    agent_before = (AGENT_SOURCE / "agent.py").read_bytes()
    shared_before = _shared_trees(workspace_server)
    script = f"""
        for target in /usr/bin/{name} /usr/local/bin/{name} /usr/lib/{name} /etc/{name} /etc/cron.d/{name} \\
                      /opt/workspace-agent/{name} /{name} /bin/{name} /lib64/{name} /sbin/{name} /sys/{name}; do
            echo {marker} > $target && echo "WROTE $target"
            touch $target 2>/dev/null && echo "TOUCHED $target"
            mkdir $target.d 2>/dev/null && echo "MKDIR $target.d"
        done
        echo {marker} >> /etc/passwd && echo "APPENDED passwd"
        echo {marker} > /etc/hostname && echo "WROTE hostname"
        echo {marker} >> /opt/workspace-agent/agent.py && echo "APPENDED agent"
        echo 'import os' > /opt/workspace-agent/wire.py && echo "WROTE wire"
        rm -f /etc/hosts /etc/profile /usr/bin/python3 2>/dev/null; [ -e /etc/profile ] || echo "REMOVED profile"
        mv /etc/hostname /etc/hostname.bak 2>/dev/null && echo "MOVED hostname"
        chmod 777 /etc /usr/bin 2>/dev/null && echo "CHMOD"
        chown user /etc/hostname 2>/dev/null && echo "CHOWN"
        touch -d 2000-01-01 /etc/hostname 2>/dev/null && echo "UTIME"
        ln -s /workspace /usr/{name} 2>/dev/null && echo "LINKED"
        echo {marker} > /etc/ld.so.preload && echo "PRELOAD"
        mount -o remount,rw /usr 2>/dev/null && echo "REMOUNTED"
        mount -o remount,rw / 2>/dev/null && echo "REMOUNTED ROOT"
        true
    """
    answer = sh(api, sandbox["id"], script, user=user)
    for verb in (
        "WROTE",
        "TOUCHED",
        "MKDIR",
        "APPENDED",
        "REMOVED",
        "MOVED",
        "CHMOD",
        "CHOWN",
        "UTIME",
        "LINKED",
        "PRELOAD",
        "REMOUNTED",
    ):
        assert verb not in answer["stdout"], answer
    assert {path: snapshot(path) for path in WATCHED} == before
    for path in _new_names(marker):
        assert not path.exists(), path
    assert marker.encode() not in (AGENT_SOURCE / "agent.py").read_bytes()
    assert (AGENT_SOURCE / "agent.py").read_bytes() == agent_before or marker.encode() not in agent_before
    assert _shared_trees(workspace_server) == shared_before


def test_attack_write_host_system_dirs_by_files_api(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    """The files API runs as sandbox root (with CAP_DAC_OVERRIDE): still no host write."""
    marker = new_marker("api-write")
    name = marker.lower()
    sid = sandbox["id"]
    before = {path: snapshot(path) for path in WATCHED}
    for path in (
        f"/usr/bin/{name}",
        f"/etc/{name}",
        f"/etc/cron.d/{name}",
        f"/opt/workspace-agent/{name}",
        "/opt/workspace-agent/agent.py",
        "/etc/passwd",
        "/etc/hostname",
        "/usr/bin/python3",
        f"/{name}",
        f"/bin/{name}",
        f"/usr/lib/python3/{name}.pth",
    ):
        response = api.put(f"/sandboxes/{sid}/files", params={"path": path}, content=marker.encode())
        assert_error(response, 403, "PERMISSION_DENIED")
    for path in (f"/usr/{name}", f"/etc/{name}", f"/{name}"):
        assert_error(api.post(f"/sandboxes/{sid}/files/mkdir", json={"path": path}), 403, "PERMISSION_DENIED")
    for path in ("/etc/hostname", "/usr/bin/python3", "/opt/workspace-agent/agent.py", "/etc/passwd"):
        assert_error(api.delete(f"/sandboxes/{sid}/files", params={"path": path}), 403, "PERMISSION_DENIED")
    assert_error(
        api.delete(f"/sandboxes/{sid}/files", params={"path": "/etc", "recursive": "true"}), 403, "PERMISSION_DENIED"
    )
    api.put(f"/sandboxes/{sid}/files", params={"path": "/workspace/payload"}, content=marker.encode())
    assert_error(
        api.post(
            f"/sandboxes/{sid}/files/move", json={"source": "/etc/hostname", "destination": "/workspace/hostname"}
        ),
        403,
        "PERMISSION_DENIED",
    )
    for route in ("move", "copy"):
        response = api.post(
            f"/sandboxes/{sid}/files/{route}", json={"source": "/workspace/payload", "destination": f"/usr/bin/{name}"}
        )
        assert_error(response, 403, "PERMISSION_DENIED")
    assert {path: snapshot(path) for path in WATCHED} == before
    for path in _new_names(marker):
        assert not path.exists(), path


def test_attack_write_through_symlink_to_host_dir(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    """A link in /workspace to /usr/bin or /etc is followed inside the sandbox, onto the
    read-only mount: the upload is refused, nothing lands on the host."""
    marker = new_marker("symlink-write")
    name = marker.lower()
    sid = sandbox["id"]
    sh(api, sid, "ln -s /usr/bin /workspace/bin-link; ln -s /etc /workspace/etc-link")
    for path in (f"/workspace/bin-link/{name}", f"/workspace/etc-link/{name}"):
        response = api.put(f"/sandboxes/{sid}/files", params={"path": path}, content=marker.encode())
        assert_error(response, 403, "PERMISSION_DENIED")
    assert not (Path("/usr/bin") / name).exists()
    assert not (Path("/etc") / name).exists()


def test_attack_setuid_binary_gains_nothing(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    """Host setuid binaries are visible but inert for the sandbox user: /usr is nosuid,
    no_new_privs is set and their owner (host root) is not mapped; setuid(0) fails."""
    answer = sh(
        api,
        sandbox["id"],
        "echo su; su -c 'id -u' root </dev/null 2>/dev/null; "
        "echo setuid; python3 -c 'import os; os.setuid(0)' 2>&1 | tail -1; "
        "echo setresuid; python3 -c 'import os; os.setresuid(0, 0, 0)' 2>&1 | tail -1; "
        "stat -c '%A %U' /usr/bin/su; id -u",
    )
    lines = answer["stdout"].splitlines()
    assert lines == [
        "su",
        "setuid",
        "PermissionError: [Errno 1] Operation not permitted",
        "setresuid",
        "PermissionError: [Errno 1] Operation not permitted",
        "-rwsr-xr-x nobody",  # host root-owned: unmapped, shown as nobody
        "1000",
    ], answer
