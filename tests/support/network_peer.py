"""A stand-in for other machines: a TCP server in a network namespace this test creates.

The peer sits behind a veth pair on a private /30 (`PRIVATE`, the host's neighbour on a LAN).
It also answers on addresses the host only *routes* to it, as a router would: one outside
every special-purpose range the sandboxes' egress filter blocks (`PUBLIC`, from TEST-NET-2,
which the internet never routes, standing in for a public server) and one link-local
(`LINK_LOCAL`, standing in for a cloud metadata endpoint; not 169.254.169.254 itself, so a
real metadata service of the machine running the tests is never shadowed).
No traffic ever leaves this machine.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

HOST_SIDE = "10.213.77.1"
PRIVATE = "10.213.77.2"
PUBLIC = "198.51.100.77"
LINK_LOCAL = "169.254.77.77"
PORT = 7777
GREETING = "hello-from-peer"

SERVE = f"""
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", {PORT}))
s.listen()
while True:
    c, _ = s.accept()
    c.sendall(b"{GREETING}")
    c.close()
"""

# Run inside a sandbox: connect to each host:port given and print what happened, one line each.
PROBE = """
import socket, sys
for target in sys.argv[1:]:
    host, port = target.rsplit(",", 1)
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, int(port))); print(target, "answered", s.recv(100).decode())
    except OSError as e:
        print(target, "failed", e.errno)
    finally:
        s.close()
"""


@dataclass(frozen=True)
class Peer:
    namespace: str

    @property
    def private(self) -> tuple[str, int]:
        return PRIVATE, PORT

    @property
    def public(self) -> tuple[str, int]:
        return PUBLIC, PORT

    @property
    def link_local(self) -> tuple[str, int]:
        return LINK_LOCAL, PORT


def sh(command: str) -> None:
    subprocess.run(command, shell=True, check=True, capture_output=True, timeout=30)


@contextmanager
def network_peer() -> Iterator[Peer]:
    name = "wst" + secrets.token_hex(3)
    sh(f"ip netns add {name}")
    server = None
    try:
        sh(f"ip link add {name}h type veth peer name {name}p")
        sh(f"ip link set {name}p netns {name}")
        sh(f"ip addr add {HOST_SIDE}/30 dev {name}h && ip link set {name}h up")
        inside = f"ip netns exec {name}"
        sh(f"{inside} ip addr add {PRIVATE}/30 dev {name}p")
        sh(f"{inside} ip addr add {PUBLIC}/32 dev lo && {inside} ip addr add {LINK_LOCAL}/32 dev lo")
        sh(f"{inside} ip link set {name}p up && {inside} ip link set lo up")
        sh(f"ip route add {PUBLIC}/32 via {PRIVATE} && ip route add {LINK_LOCAL}/32 via {PRIVATE}")
        server = subprocess.Popen(["ip", "netns", "exec", name, "python3", "-c", SERVE])
        wait_until_listening(name)
        yield Peer(name)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for command in (
            f"ip route del {PUBLIC}/32",
            f"ip route del {LINK_LOCAL}/32",
            f"ip link del {name}h",
            f"ip netns del {name}",
        ):
            subprocess.run(command, shell=True, capture_output=True)


def wait_until_listening(namespace: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listening = subprocess.run(
            ["ip", "netns", "exec", namespace, "ss", "-Hltn", f"sport = :{PORT}"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        if listening.strip():
            return
        time.sleep(0.05)
    raise RuntimeError("the network peer did not start listening")


def probe(api: httpx.Client, sandbox_id: str, *targets: tuple[str, int]) -> dict[tuple[str, int], str]:
    """Connect from the sandbox to each (host, port): 'answered <greeting>' or 'failed <errno>'."""
    args = [f"{host},{port}" for host, port in targets]
    body = api.post(
        f"/sandboxes/{sandbox_id}/processes/run",
        json={"command": "python3", "args": ["-c", PROBE, *args], "timeout": 30},
    ).json()
    lines = dict(line.split(" ", 1) for line in str(body["stdout"]).splitlines())
    return {(host, port): lines[f"{host},{port}"] for host, port in targets}
