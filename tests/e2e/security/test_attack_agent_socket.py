"""Attacks on the agent's control socket (/run/workspace/agent.sock inside a sandbox).

The socket is how the server drives the sandbox. The sandbox user must not reach it.
Sandbox root can (it is the agent's own uid): that is within its trust boundary for its
own sandbox, but the directory is a bind of a host directory the server connects
through, and whatever answers there is untrusted. So: planting a symlink must never make
the server talk to another sandbox, and a fake agent (garbage, a flood that ignores flow
control, silence) must only cost the attacker its own sandbox, never the server or the
other sandboxes. Each trick is planted, then the server restarts and re-adopts.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.e2e.security.attack_support import (
    PLANT_AGENT_SOCKET,
    assert_sandbox_answers,
    create_sandbox,
    new_marker,
    py,
    sh,
)
from tests.support.live_server import LiveServer, data_root, start_server, stop_server

FAKE_AGENT = r"""
import json, os, socket, struct, sys, time
mode = sys.argv[1]
HEADER = struct.Struct(">IIB")
"""
FAKE_AGENT += PLANT_AGENT_SOCKET
FAKE_AGENT += r"""

def frame(stream, kind, payload=b""):
    return HEADER.pack(len(payload), stream, kind) + payload

def read_frame(conn):
    head = b""
    while len(head) < HEADER.size:
        chunk = conn.recv(HEADER.size - len(head))
        if not chunk:
            raise EOFError
        head += chunk
    length, stream, kind = HEADER.unpack(head)
    body = b""
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            raise EOFError
        body += chunk
    return stream, kind, body

while True:
    conn, _ = listener.accept()
    try:
        if mode == "garbage":
            conn.sendall(os.urandom(1 << 16))
            time.sleep(5)
        elif mode == "silent":
            time.sleep(60)
        elif mode == "huge-frame":
            conn.sendall(HEADER.pack(0x7FFFFFF0, 1, 2))
            time.sleep(5)
        elif mode == "flood":
            while True:
                stream, kind, body = read_frame(conn)
                if kind != 1:
                    continue
                op = json.loads(body).get("op")
                if op == "hello":
                    conn.sendall(frame(stream, 2, json.dumps({"type": "ok", "version": 1, "pid": 1}).encode()))
                    conn.sendall(frame(stream, 7))
                else:  # any other operation: pour data without waiting for credit
                    conn.sendall(frame(stream, 2, json.dumps({"type": "ok", "size": 1 << 30}).encode()))
                    chunk = frame(stream, 3, b"x" * (256 * 1024))
                    for _ in range(1024):
                        conn.sendall(chunk)
    except Exception:
        pass
    finally:
        conn.close()
"""


def test_attack_sandbox_user_connects_to_agent_socket(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    answer = py(
        api,
        sandbox["id"],
        """
import os, socket
s = socket.socket(socket.AF_UNIX)
try:
    s.connect("/run/workspace/agent.sock")
    print("CONNECTED")
except OSError as exc:
    print("refused", exc.errno)
for op in (lambda: os.listdir("/run/workspace"), lambda: os.unlink("/run/workspace/agent.sock"),
           lambda: open("/run/workspace/x", "w")):
    try:
        op()
        print("ALLOWED")
    except OSError as exc:
        print("denied", exc.errno)
""",
    )
    assert answer["stdout"].split("\n")[0] == "refused 13", answer
    assert "ALLOWED" not in answer["stdout"] and answer["stdout"].count("denied 13") == 3, answer
    assert sh(api, sandbox["id"], "echo alive")["stdout"] == "alive\n"


@dataclass
class Restarted:
    server: LiveServer
    victim: dict[str, Any]
    marker: str
    attackers: dict[str, dict[str, Any]]
    restart_seconds: float


TRICKS = ["symlink", "garbage", "silent", "huge-frame", "flood"]


@pytest.fixture(scope="module")
def restarted() -> Iterator[Restarted]:
    """A private server: a victim sandbox first, then one attacker per trick; the tricks
    are planted by sandbox root, and the server restarts."""
    root = data_root("ws-sec-restart-")
    data_dir = root / "data"
    servers = [start_server(data_dir, extra=["--pool-size", "0"])]
    try:
        marker = new_marker("victim")
        with httpx.Client(base_url=servers[-1].url + "/api/v1", timeout=60) as client:
            victim = create_sandbox(client)
            assert (
                client.put(
                    f"/sandboxes/{victim['id']}/files", params={"path": "/workspace/secret"}, content=marker.encode()
                ).status_code
                == 200
            )
            attackers = {trick: create_sandbox(client) for trick in TRICKS}
            # The worst case: the attacker knows the host layout (its mount table no longer
            # shows it: the socket dir lives on the sandbox's own disk image).
            victim_socket = data_dir / "sandboxes" / victim["id"] / "rw" / "run" / "agent.sock"
            planted = sh(
                client,
                attackers["symlink"]["id"],
                f"""
                set -e
                ln -s "{victim_socket}" /run/workspace/hijack
                mv -f /run/workspace/hijack /run/workspace/agent.sock
                readlink /run/workspace/agent.sock
            """,
                user="root",
            )
            assert str(data_dir) in planted["stdout"], planted
            for trick in TRICKS[1:]:
                fake = sh(
                    client,
                    attackers[trick]["id"],
                    # Wait for the fake's "planted" (a fixed sleep lost the race on a loaded host).
                    f"setsid python3 -c '{FAKE_AGENT}' {trick} </dev/null >/tmp/fake.out 2>&1 & "
                    "for i in $(seq 600); do grep -q planted /tmp/fake.out && break; sleep 0.05; done; "
                    "cat /tmp/fake.out; "
                    "python3 -c 'import os, stat; "
                    'print(stat.S_ISSOCK(os.lstat("/run/workspace/agent.sock").st_mode))\'',
                    user="root",
                )
                assert fake["stdout"].split() == ["planted", "True"], fake
        stop_server(servers[-1])
        started = time.monotonic()
        servers.append(start_server(data_dir, extra=["--pool-size", "0"]))
        yield Restarted(servers[-1], victim, marker, attackers, time.monotonic() - started)
    finally:
        with httpx.Client(base_url=servers[-1].url + "/api/v1", timeout=60) as client:
            if servers[-1].process.poll() is None:
                for item in client.get("/sandboxes").json().get("sandboxes", []):
                    client.delete(f"/sandboxes/{item['id']}", params={"force": "true"})
        for server in servers:
            stop_server(server)
        shutil.rmtree(root, ignore_errors=True)


def _client(restarted: Restarted) -> httpx.Client:
    return httpx.Client(base_url=restarted.server.url + "/api/v1", timeout=60)


def test_attack_agent_socket_symlink_cannot_redirect_server_after_restart(restarted: Restarted) -> None:
    """The server opens the socket name with O_NOFOLLOW: the symlink to the victim's
    socket is refused, the attacker only cuts itself off."""
    attacker = restarted.attackers["symlink"]["id"]
    with _client(restarted) as client:
        stolen = client.get(f"/sandboxes/{attacker}/files", params={"path": "/workspace/secret"})
        assert restarted.marker not in stolen.text
        hostname = client.post(f"/sandboxes/{attacker}/processes/run", json={"command": "hostname"})
        assert restarted.victim["id"] not in hostname.text
        state = client.get(f"/sandboxes/{attacker}").json()
        assert state["state"] == "error" and state["error_message"], state


@pytest.mark.parametrize("trick", ["garbage", "silent", "huge-frame"])
def test_attack_fake_agent_is_not_adopted(restarted: Restarted, trick: str) -> None:
    with _client(restarted) as client:
        state = client.get(f"/sandboxes/{restarted.attackers[trick]['id']}").json()
        assert state["state"] == "error" and state["error_message"], state
        response = client.post(
            f"/sandboxes/{restarted.attackers[trick]['id']}/processes/run", json={"command": "echo", "args": ["x"]}
        )
        assert response.status_code == 503 and response.json()["code"] == "AGENT_NOT_CONNECTED", response.text


def test_attack_fake_agent_ignoring_flow_control_is_dropped(restarted: Restarted) -> None:
    """A fake agent that answers hello, then pours data without credit: the server drops
    the link at the window instead of buffering (the read fails with 503), and stays up."""
    attacker = restarted.attackers["flood"]["id"]
    with _client(restarted) as client:
        started = time.monotonic()
        try:
            response = client.get(f"/sandboxes/{attacker}/files", params={"path": "/workspace/x"}, timeout=30)
            received = len(response.content)
            status = response.status_code
        except httpx.HTTPError:
            received, status = 0, 0  # the stream was cut: also a drop
        assert time.monotonic() - started < 30
        assert status in (0, 200, 503), status
        assert received <= 8 << 20, received  # at most about a window, never the gigabyte announced
        state = client.get(f"/sandboxes/{attacker}").json()
        assert state["state"] == "error", state
        assert restarted.server.process.poll() is None
        assert httpx.get(restarted.server.url + "/healthz", timeout=10).status_code == 200


def test_attack_agent_socket_tricks_leave_victim_and_server_serving(restarted: Restarted) -> None:
    # Each silent fake agent costs the restart at most its connect timeout.
    assert restarted.restart_seconds < 30
    with _client(restarted) as client:
        state = client.get(f"/sandboxes/{restarted.victim['id']}").json()
        assert state["state"] == "running", state
        own = client.get(f"/sandboxes/{restarted.victim['id']}/files", params={"path": "/workspace/secret"})
        assert own.status_code == 200 and own.text == restarted.marker
        assert_sandbox_answers(client, restarted.victim["id"])
        fresh = create_sandbox(client)
        assert sh(client, fresh["id"], "echo fresh")["stdout"] == "fresh\n"
