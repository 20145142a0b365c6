"""Attacks from a sandbox with `network: true` on machines that are not the internet: the
host's own addresses, its LAN, link-local (cloud metadata) addresses, and the egress filter
itself (runtimes/egress.py).

The targets are listeners this test starts: one on the host's 0.0.0.0, and a peer in a
network namespace of our own that stands in for a LAN neighbour, a metadata endpoint and a
public server (tests/support/network_peer.py). No traffic leaves this machine.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.security.attack_support import create_sandbox, delete_sandbox, sh
from tests.support.live_server import data_root, start_server, stop_server
from tests.support.network_peer import GREETING, HOST_SIDE, Peer, probe


@pytest.fixture
def host_listener() -> Iterator[int]:
    """A TCP service on all of the host's addresses, as careless services are."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("0.0.0.0", 0))
    listener.listen(8)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            with connection:
                connection.sendall(b"host-service")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(listener.getsockname()[1])
    stop.set()
    listener.close()


def host_addresses() -> list[str]:
    """Every IPv4 address of the host but loopback (the veth end of the peer included)."""
    interfaces = json.loads(
        subprocess.run(["ip", "-j", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout
    )
    found = {
        info["local"]
        for interface in interfaces
        for info in interface.get("addr_info", [])
        if info.get("family") == "inet"
    }
    return sorted(a for a in found if not ipaddress.IPv4Address(a).is_loopback)


# A create with network claims a warm pool sandbox (its filter was loaded while it waited,
# and is reloaded if the host's networks changed since: the peer below adds one), unless it
# asks for another disk size, which starts a sandbox with its filter.
@pytest.fixture(params=[{}, {"disk_mb": 1000}], ids=["warm-pool", "cold"])
def networked(api: httpx.Client, request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    sandbox = create_sandbox(api, network=True, **request.param)
    yield sandbox
    delete_sandbox(api, sandbox["id"])


def test_networked_sandbox_reaches_a_public_host_but_not_the_host_its_lan_or_metadata(
    api: httpx.Client, networked: dict[str, Any], peer: Peer, host_listener: int
) -> None:
    addresses = host_addresses()
    assert HOST_SIDE in addresses
    targets = [peer.public, peer.private, peer.link_local, *((a, host_listener) for a in addresses)]
    seen = probe(api, networked["id"], *targets)
    # The network works (so the failures below are the filter's doing, not a dead link) ...
    assert seen.pop(peer.public) == f"answered {GREETING}"
    # ... and every one of these is refused at once, inside the sandbox: EHOSTUNREACH.
    assert seen == dict.fromkeys(seen, "failed 113"), seen


def test_sandbox_root_cannot_lift_the_egress_filter(api: httpx.Client, networked: dict[str, Any], peer: Peer) -> None:
    attempts = (
        "nft flush ruleset; nft delete table inet workspace_egress; "
        "ip route add 10.213.77.0/30 dev tap0; ip link set tap0 down; ip link set tap0 up"
    )
    result = sh(api, networked["id"], attempts, user="root")
    assert "Operation not permitted" in result["stderr"], result
    assert probe(api, networked["id"], peer.private) == {peer.private: "failed 113"}


def test_operator_allowed_ranges_are_reachable_and_nothing_else(peer: Peer) -> None:
    root = data_root()
    server = start_server(root / "data", extra=["--pool-size", "0", "--network-allow", "10.213.77.0/30"])
    try:
        with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as api:
            sandbox = create_sandbox(api, network=True)
            try:
                seen = probe(api, sandbox["id"], peer.private, peer.link_local)
                assert seen[peer.private] == f"answered {GREETING}"
                assert seen[peer.link_local] == "failed 113"
            finally:
                delete_sandbox(api, sandbox["id"])
    finally:
        stop_server(server)


def test_an_invalid_allowed_range_stops_the_server_with_a_clear_error() -> None:
    for bad, reason in (("10.0.0.0/33", "not an IPv4 address or CIDR range"), ("fd00::/8", "no IPv6 route")):
        with pytest.raises(RuntimeError) as failed:
            start_server(data_root() / "data", extra=["--network-allow", bad])
        assert f"--network-allow: {bad!r}" in str(failed.value)
        assert reason in str(failed.value)
