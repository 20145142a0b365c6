"""Opt-in outbound network. Traffic only goes to a network namespace this test creates."""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.live_server import LiveServer

PEER_ADDRESS = "10.213.77.2"
HOST_ADDRESS = "10.213.77.1"

PROBE = """
import socket, sys
s = socket.socket(); s.settimeout(3)
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print(s.recv(100).decode())
except OSError as e:
    print("refused", e.errno)
"""


def sh(command: str) -> None:
    subprocess.run(command, shell=True, check=True, capture_output=True, timeout=30)


@pytest.fixture
def peer() -> Iterator[tuple[str, int]]:
    """A TCP server inside a network namespace of our own, reachable from the host by veth."""
    name = "wst" + secrets.token_hex(3)
    sh(f"ip netns add {name}")
    server = None
    try:
        sh(f"ip link add {name}h type veth peer name {name}p")
        sh(f"ip link set {name}p netns {name}")
        sh(f"ip addr add {HOST_ADDRESS}/30 dev {name}h && ip link set {name}h up")
        sh(f"ip netns exec {name} ip addr add {PEER_ADDRESS}/30 dev {name}p")
        sh(f"ip netns exec {name} ip link set {name}p up && ip netns exec {name} ip link set lo up")
        code = ("import socket; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1);"
                f"s.bind(('{PEER_ADDRESS}', 7777)); s.listen()\n"
                "while True:\n c,_=s.accept(); c.sendall(b'hello-from-peer'); c.close()")
        server = subprocess.Popen(["ip", "netns", "exec", name, "python3", "-c", code])
        time.sleep(0.5)
        yield PEER_ADDRESS, 7777
    finally:
        if server is not None:
            server.kill()
            server.wait()
        subprocess.run(f"ip link del {name}h", shell=True, capture_output=True)
        subprocess.run(f"ip netns del {name}", shell=True, capture_output=True)


def probe(api: httpx.Client, sandbox_id: str, host: str, port: int) -> str:
    body = api.post(f"/sandboxes/{sandbox_id}/processes/run",
                    json={"command": "python3", "args": ["-c", PROBE, host, str(port)], "timeout": 20}).json()
    return str(body["stdout"])


def test_network_is_opt_in(api: httpx.Client, workspace_server: LiveServer, peer: tuple[str, int],
                           sandbox: dict[str, Any]) -> None:
    assert "refused" in probe(api, sandbox["id"], *peer)
    networked = api.post("/sandboxes", json={"network": True}).json()
    try:
        assert networked["network"] is True
        assert probe(api, networked["id"], *peer).strip() == "hello-from-peer"
        # The host's loopback services stay out of reach, the API's own port included.
        port = int(workspace_server.url.rsplit(":", 1)[1])
        assert "refused" in probe(api, networked["id"], "10.0.2.2", port)
    finally:
        api.delete(f"/sandboxes/{networked['id']}", params={"force": "true"})
