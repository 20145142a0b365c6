"""Attacks on the host's loopback services from inside a sandbox.

Every sandbox has its own network namespace with only `lo`: 127.0.0.1 inside is the
sandbox's own loopback, not the host's. The test opens listeners on the host's
127.0.0.1 (TCP, UDP) and an abstract Unix socket, then tries to reach them and the API
server's own port from inside. Only addresses of this machine (127.0.0.0/8, ::1) are
ever used.
"""

from __future__ import annotations

import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tests.e2e.security.attack_support import py, sh
from tests.support.live_server import LiveServer

PROBE = """
import socket, sys
results = []
for host, port in [(h, int(p)) for h, p in (a.split(",") for a in sys.argv[1:])]:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(3)
    try:
        s.connect((host, port))
        s.sendall(b"GET /healthz HTTP/1.0\\r\\n\\r\\n")
        print("CONNECTED", host, port, s.recv(100))
    except OSError as exc:
        print("failed", host, port, exc.errno)
    finally:
        s.close()
"""


@dataclass
class HostListeners:
    tcp_port: int
    udp_port: int
    abstract_name: str
    received: list[str] = field(default_factory=list)


@pytest.fixture
def host_listeners() -> Iterator[HostListeners]:
    """A TCP and a UDP listener on the host's 127.0.0.1 and an abstract Unix socket,
    each recording anything that reaches it."""
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(8)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    abstract = socket.socket(socket.AF_UNIX)
    name = "ws-security-" + secrets.token_hex(8)
    abstract.bind("\0" + name)
    abstract.listen(8)
    listeners = HostListeners(tcp.getsockname()[1], udp.getsockname()[1], name)
    stop = threading.Event()

    def watch(sock: socket.socket, kind: str) -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                if kind == "udp":
                    sock.recvfrom(100)
                else:
                    conn, _ = sock.accept()
                    conn.close()
                listeners.received.append(kind)
            except OSError:
                continue

    threads = [
        threading.Thread(target=watch, args=(s, k), daemon=True)
        for s, k in ((tcp, "tcp"), (udp, "udp"), (abstract, "abstract"))
    ]
    for thread in threads:
        thread.start()
    try:
        yield listeners
    finally:
        stop.set()
        for thread in threads:
            thread.join(2)
        for sock in (tcp, udp, abstract):
            sock.close()


def _server_port(server: LiveServer) -> int:
    port = urlparse(server.url).port
    assert port is not None
    return port


@pytest.mark.parametrize("network", [False, True], ids=["default", "network-true"])
@pytest.mark.parametrize("user", ["user", "root"])
def test_attack_connect_host_loopback_tcp(
    api: httpx.Client,
    make_sandbox: Callable[..., dict[str, Any]],
    workspace_server: LiveServer,
    host_listeners: HostListeners,
    user: str,
    network: bool,
) -> None:
    """Neither the API server's port nor another host listener on 127.0.0.1 is reachable.
    `network: true` is accepted by the API but (today) still gives loopback only."""
    sandbox = make_sandbox(network=network) if network else make_sandbox()
    api_port = _server_port(workspace_server)
    targets = [
        f"127.0.0.1,{api_port}",
        f"127.0.0.1,{host_listeners.tcp_port}",
        f"127.0.0.2,{api_port}",
        f"127.1.2.3,{host_listeners.tcp_port}",
        f"::1,{api_port}",
        f"localhost,{api_port}",
    ]
    answer = _run_probe(api, sandbox["id"], targets, user)
    assert "CONNECTED" not in answer["stdout"], answer
    assert answer["stdout"].count("failed") == len(targets), answer
    assert host_listeners.received == []


def _run_probe(api: httpx.Client, sandbox_id: str, targets: list[str], user: str) -> dict[str, Any]:
    response = api.post(
        f"/sandboxes/{sandbox_id}/processes/run",
        json={"command": "python3", "args": ["-c", PROBE, *targets], "user": user, "timeout": 60},
    )
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.parametrize("user", ["user", "root"])
def test_attack_send_udp_to_host_loopback(
    api: httpx.Client, sandbox: dict[str, Any], host_listeners: HostListeners, user: str
) -> None:
    py(
        api,
        sandbox["id"],
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"for _ in range(20): s.sendto(b'x', ('127.0.0.1', {host_listeners.udp_port}))",
        user=user,
    )
    sh(api, sandbox["id"], "sleep 0.5")
    assert "udp" not in host_listeners.received


@pytest.mark.parametrize("user", ["user", "root"])
def test_attack_connect_host_abstract_socket(
    api: httpx.Client, sandbox: dict[str, Any], host_listeners: HostListeners, user: str
) -> None:
    """Abstract Unix sockets live in the network namespace: the host's are out of reach."""
    answer = py(
        api,
        sandbox["id"],
        "import socket\ns = socket.socket(socket.AF_UNIX)\n"
        f"try:\n    s.connect('\\0{host_listeners.abstract_name}')\n    print('CONNECTED')\n"
        "except OSError as exc:\n    print('failed', exc.errno)",
        user=user,
    )
    assert "CONNECTED" not in answer["stdout"] and "failed" in answer["stdout"], answer
    assert host_listeners.received == []


def test_attack_network_namespace_has_only_loopback(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    answer = sh(
        api, sandbox["id"], "ls /sys/class/net; tail -n +3 /proc/net/dev | cut -d: -f1; cat /proc/net/route | wc -l"
    )
    lines = answer["stdout"].split()
    assert lines[0] == "lo" and lines[1] == "lo", answer
    assert lines[2] == "1", answer  # the route table has its header line only: no route anywhere


@pytest.mark.parametrize("user", ["user", "root"])
def test_attack_sandbox_listener_is_not_reachable_from_host(
    api: httpx.Client, sandbox: dict[str, Any], user: str
) -> None:
    """The reverse direction: a server inside on 127.0.0.1 is not the host's 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = sh(
        api,
        sandbox["id"],
        f'setsid python3 -c \'import socket,time; s=socket.socket(); s.bind(("127.0.0.1", {port})); '
        f"s.listen(); time.sleep(30)' </dev/null >/dev/null 2>&1 & sleep 0.5; "
        f'python3 -c \'import socket; socket.create_connection(("127.0.0.1", {port}), 2); '
        'print("inside-ok")\'',
        user=user,
    )
    assert "inside-ok" in started["stdout"], started
    with socket.socket() as client:
        client.settimeout(2)
        with pytest.raises(OSError):
            client.connect(("127.0.0.1", port))
