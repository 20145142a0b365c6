"""Attacks on the host's files from inside a sandbox and through the files API.

A marker file is written on the host (world-readable, under a 0755 directory), then every
trick we know is tried from inside a sandbox, as the sandbox user and as sandbox root:
/proc/1/root, /proc/self/root, symlinks read by a command and by the agent (files API),
`..`, NUL bytes, over-long paths, devices and fifos. The marker must never come back, and
the API must answer each trick with a clean 4xx.
"""

from __future__ import annotations

import os
from typing import Any

import httpx
import pytest

from tests.e2e.security.attack_support import (
    HostMarker,
    assert_client_error,
    assert_error,
    output,
    py,
    sh,
)
from workspace_server.runtimes.runc import ETC_ALLOWLIST

USERS = ["user", "root"]


def _files(api: httpx.Client, sandbox_id: str, path: str, route: str = "") -> httpx.Response:
    return api.get(f"/sandboxes/{sandbox_id}/files{route}", params={"path": path}, timeout=30)


@pytest.mark.parametrize("user", USERS)
def test_attack_read_host_file_through_proc_1_root(
    api: httpx.Client, sandbox: dict[str, Any], host_marker: HostMarker, user: str
) -> None:
    host_path = str(host_marker.path)
    tricks = [
        f"/proc/1/root{host_path}",
        f"/proc/self/root{host_path}",
        f"/proc/1/cwd/{host_path}",
        f"/proc/self/cwd/../../..{host_path}",
        f"/proc/1/root/proc/1/root{host_path}",
        host_path,
        f"/proc/1/root/..{host_path}",
    ]
    script = "; ".join(f"cat '{path}' 2>&1" for path in tricks)
    answer = sh(api, sandbox["id"], script, user=user)
    assert host_marker.marker not in output(answer)
    # The sandbox's own /proc/1/root is the sandbox root, never the host's.
    listing = sh(api, sandbox["id"], "ls /proc/1/root/ 2>&1", user="root")
    assert "workspace" in listing["stdout"]
    assert host_marker.directory.name not in output(listing)


@pytest.mark.parametrize("user", USERS)
def test_attack_read_host_file_through_symlink_via_command(
    api: httpx.Client, sandbox: dict[str, Any], host_marker: HostMarker, user: str
) -> None:
    host_path = str(host_marker.path)
    answer = sh(
        api,
        sandbox["id"],
        f"ln -s '{host_path}' /tmp/l1; ln -s '/proc/1/root{host_path}' /tmp/l2; "
        f"ln -s '{host_marker.directory}' /tmp/l3; "
        "cat /tmp/l1 /tmp/l2 /tmp/l3/host-secret.txt 2>&1; readlink -f /tmp/l1",
        user=user,
    )
    assert host_marker.marker not in output(answer)
    assert answer["exit_code"] != 0


def test_attack_read_host_file_through_symlink_via_files_api(
    api: httpx.Client, sandbox: dict[str, Any], host_marker: HostMarker
) -> None:
    """The agent (sandbox root, with CAP_DAC_OVERRIDE) follows symlinks inside the sandbox's
    own root only: a link to a host path names a sandbox path that does not exist."""
    host_path = str(host_marker.path)
    sh(
        api,
        sandbox["id"],
        f"ln -s '{host_path}' /workspace/to-host; ln -s '/proc/1/root{host_path}' /workspace/via-proc; "
        f"ln -s '{host_marker.directory}' /workspace/host-dir",
    )
    for path in (
        "/workspace/to-host",
        "/workspace/via-proc",
        "/workspace/host-dir/host-secret.txt",
        "to-host",
        f"/proc/1/root{host_path}",
        f"/proc/self/root{host_path}",
        host_path,
    ):
        response = _files(api, sandbox["id"], path)
        assert host_marker.marker.encode() not in response.content
        assert_error(response, 404, "FILE_NOT_FOUND")
    for route in ("/stat", "/list", "/exists"):
        response = _files(api, sandbox["id"], str(host_marker.directory), route)
        assert host_marker.path.name not in response.text
    response = _files(api, sandbox["id"], "/workspace/host-dir", "/list")
    assert host_marker.path.name not in response.text
    assert_error(response, 404, "FILE_NOT_FOUND")
    # Copying or moving the link copies the link, never the host file behind it.
    response = api.post(
        f"/sandboxes/{sandbox['id']}/files/copy",
        json={"source": "/workspace/to-host", "destination": "/workspace/copied"},
    )
    if response.status_code == 200:
        assert _files(api, sandbox["id"], "/workspace/copied").status_code == 404
    else:
        assert_client_error(response)


def test_attack_search_sandbox_filesystem_for_host_marker(
    api: httpx.Client, sandbox: dict[str, Any], host_marker: HostMarker
) -> None:
    """Sandbox root searches every writable and host-shared tree for the marker's file name
    and content: none is reachable (only /usr and /etc of the host are shared, read-only)."""
    answer = sh(
        api,
        sandbox["id"],
        f"find / \\( -path /proc -o -path /sys -o -path /usr \\) -prune -o -name '{host_marker.path.name}' "
        "-print 2>/dev/null; "
        f"grep -rl '{host_marker.marker}' /etc /tmp /var/tmp /workspace /home /root /run /opt 2>/dev/null; "
        "true",
        user="root",
        timeout=60,
    )
    assert host_marker.path.name not in answer["stdout"]
    assert host_marker.marker not in answer["stdout"]


@pytest.mark.parametrize(
    "path",
    [
        "/workspace/../etc/passwd",
        "../../../../etc/shadow",
        "/workspace/../../../../../../tmp",
        "/..",
        "a/b/../../../c",
        "/proc/1/root/../..",
    ],
)
def test_attack_files_api_dotdot_path_is_refused(api: httpx.Client, sandbox: dict[str, Any], path: str) -> None:
    sid = sandbox["id"]
    for route in ("", "/list", "/stat", "/exists"):
        assert_error(_files(api, sid, path, route), 400, "INVALID_REQUEST")
    assert_error(api.put(f"/sandboxes/{sid}/files", params={"path": path}, content=b"x"), 400, "INVALID_REQUEST")
    assert_error(
        api.delete(f"/sandboxes/{sid}/files", params={"path": path, "recursive": "true"}), 400, "INVALID_REQUEST"
    )
    assert_error(api.post(f"/sandboxes/{sid}/files/mkdir", json={"path": path}), 400, "INVALID_REQUEST")
    for route in ("move", "copy"):
        assert_error(
            api.post(f"/sandboxes/{sid}/files/{route}", json={"source": path, "destination": "/workspace/x"}),
            400,
            "INVALID_REQUEST",
        )
        assert_error(
            api.post(f"/sandboxes/{sid}/files/{route}", json={"source": "/workspace", "destination": path}),
            400,
            "INVALID_REQUEST",
        )
    answer = api.post(f"/sandboxes/{sid}/processes/run", json={"command": "pwd", "cwd": path})
    assert_error(answer, 400, "INVALID_REQUEST")


@pytest.mark.parametrize("path", ["/workspace/a\x00/../../etc/passwd", "/etc/passwd\x00.txt", "\x00"])
def test_attack_files_api_nul_byte_path_is_refused(api: httpx.Client, sandbox: dict[str, Any], path: str) -> None:
    sid = sandbox["id"]
    for route in ("", "/list", "/stat", "/exists"):
        assert_error(_files(api, sid, path, route), 400, "INVALID_REQUEST")
    assert_error(api.put(f"/sandboxes/{sid}/files", params={"path": path}, content=b"x"), 400, "INVALID_REQUEST")
    assert_error(api.post(f"/sandboxes/{sid}/files/mkdir", json={"path": path}), 400, "INVALID_REQUEST")
    assert_error(
        api.post(f"/sandboxes/{sid}/files/move", json={"source": "/workspace", "destination": path}),
        400,
        "INVALID_REQUEST",
    )
    assert_error(
        api.post(f"/sandboxes/{sid}/processes/run", json={"command": "cat", "args": [path]}), 400, "INVALID_REQUEST"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/workspace/" + "a" * 5000,  # whole path over 4096 bytes
        "/workspace/" + "b/" * 2100,  # many short components, over 4096 bytes
        "/workspace/" + "c" * 256,  # one component over 255 bytes
        "/workspace/" + "é" * 200,  # 400 bytes of UTF-8 in one component
    ],
)
def test_attack_files_api_overlong_path_is_refused(api: httpx.Client, sandbox: dict[str, Any], path: str) -> None:
    sid = sandbox["id"]
    for route in ("", "/stat", "/exists", "/list"):
        assert_error(_files(api, sid, path, route), 400, "INVALID_REQUEST")
    assert_error(api.put(f"/sandboxes/{sid}/files", params={"path": path}, content=b"x"), 400, "INVALID_REQUEST")
    assert_error(
        api.post(f"/sandboxes/{sid}/files/mkdir", json={"path": path, "recursive": True}), 400, "INVALID_REQUEST"
    )


@pytest.mark.parametrize(
    "path",
    [
        "/dev/zero",
        "/dev/urandom",
        "/dev/random",
        "/dev/full",
        "/dev/null",
        "/dev/pts/ptmx",
        "/proc/keys",
        "/proc/timer_list",
    ],
)
def test_attack_files_api_read_device_is_refused(api: httpx.Client, sandbox: dict[str, Any], path: str) -> None:
    """Reading an endless or blocking device must be refused at once, not streamed forever."""
    body = assert_error(_files(api, sandbox["id"], path), 400, "INVALID_REQUEST")
    assert "not a regular file" in body["message"]


def test_attack_files_api_read_fifo_is_refused_without_hanging(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    sh(api, sandbox["id"], "mkfifo /workspace/pipe /tmp/pipe")
    for path in ("/workspace/pipe", "/tmp/pipe"):
        body = assert_error(_files(api, sandbox["id"], path), 400, "INVALID_REQUEST")
        assert "not a regular file" in body["message"]
    # Writing onto a fifo must not block on it either (uploads replace files by rename).
    response = api.put(
        f"/sandboxes/{sandbox['id']}/files", params={"path": "/workspace/pipe"}, content=b"x", timeout=30
    )
    assert_client_error(response)


def test_attack_files_api_symlink_loop_is_refused(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    sh(api, sandbox["id"], "ln -s /workspace/loop-b /workspace/loop-a; ln -s /workspace/loop-a /workspace/loop-b")
    assert_error(_files(api, sandbox["id"], "/workspace/loop-a"), 400, "INVALID_REQUEST")
    assert_client_error(_files(api, sandbox["id"], "/workspace/loop-a/x", "/list"))


@pytest.mark.parametrize("path", ["/workspace/sock", "/run/workspace/agent.sock", "/dev/tty"])
def test_attack_files_api_read_socket_is_refused(api: httpx.Client, sandbox: dict[str, Any], path: str) -> None:
    py(api, sandbox["id"], "import socket; socket.socket(socket.AF_UNIX).bind('/workspace/sock')")
    body = assert_error(_files(api, sandbox["id"], path), 400, "INVALID_REQUEST")
    assert "not a regular file" in body["message"]


HOST_SECRETS = [
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/shadow-",
    "/etc/sudoers",
    "/etc/ssh/ssh_host_ed25519_key",
    "/etc/ssh/ssh_host_rsa_key",
    "/etc/ssl/private",
    "/etc/machine-id",
    "/etc/pip.conf",
    "/etc/npmrc",
    "/etc/environment",
    "/etc/crontab",
    "/etc/docker",
    "/etc/apt/auth.conf",
]
SANDBOX_ETC_OWN = {"passwd", "group", "hosts", "resolv.conf", "hostname"}


@pytest.mark.parametrize("user", USERS)
def test_attack_read_host_secrets_in_etc(api: httpx.Client, sandbox: dict[str, Any], user: str) -> None:
    """The sandbox's /etc is an allow-listed copy of the host's: credentials, keys and
    service configs are simply not there, for commands (even root) and the files API."""
    present_on_host = [path for path in HOST_SECRETS if os.path.lexists(path)]
    assert "/etc/shadow" in present_on_host  # the attack has something to look for
    answer = sh(api, sandbox["id"], " ".join(["ls -d", *HOST_SECRETS]) + " 2>/dev/null; true", user=user)
    assert answer["stdout"] == "", answer
    for path in present_on_host:
        assert_error(_files(api, sandbox["id"], path), 404, "FILE_NOT_FOUND")
        assert _files(api, sandbox["id"], path, "/exists").json() == {"exists": False}


def test_attack_etc_holds_only_allow_listed_names(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    listing = api.get(f"/sandboxes/{sandbox['id']}/files/list", params={"path": "/etc"})
    assert listing.status_code == 200, listing.text
    names = {entry["name"] for entry in listing.json()["files"]}
    assert names <= set(ETC_ALLOWLIST) | SANDBOX_ETC_OWN, names - set(ETC_ALLOWLIST) - SANDBOX_ETC_OWN
    assert names >= SANDBOX_ETC_OWN
    private = sh(api, sandbox["id"], "find /etc -name private 2>/dev/null; true", user="root")
    assert private["stdout"] == "", private


def test_attack_etc_passwd_is_the_sandbox_override(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    """/etc/passwd, /etc/group and /etc/hosts inside are the sandbox's own, not the host's."""
    response = _files(api, sandbox["id"], "/etc/passwd")
    assert response.status_code == 200
    names = {line.split(":")[0] for line in response.text.splitlines() if line}
    assert names == {"root", "user", "nobody"}
    hosts = _files(api, sandbox["id"], "/etc/hosts").text
    assert hosts.split() == ["127.0.0.1", "localhost", "::1", "localhost", "ip6-localhost", "ip6-loopback"]
