"""Unauthenticated clients trying to exhaust the server (docs/security.md, "Exhaust the
server from the network"): endless request heads, connections that never send a request
or stop half-way, floods of connections, and running the server out of open files.

The attacker connects from 127.0.0.1; the legitimate client from 127.0.0.2 (another
loopback address: another peer as far as per-peer caps go). Servers with special limits
are private ones (reliability_support.Harness cleans them up); every socket is closed.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.reliability.reliability_support import (
    Harness,
    bundle_ids,
    rss_bytes,
    runc_ids,
    wait_until,
)
from tests.support.live_server import LiveServer

ATTACKER = "127.0.0.1"
VICTIM = "127.0.0.2"
HEAD_CAP = 64 * 1024


def victim_client(base_url: str, timeout: float = 60) -> httpx.Client:
    return httpx.Client(base_url=base_url, transport=httpx.HTTPTransport(local_address=VICTIM), timeout=timeout)


def connect(url: str, source: str = ATTACKER) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10, source_address=(source, 0))


@contextlib.contextmanager
def connections(url: str, count: int, source: str = ATTACKER) -> Iterator[list[socket.socket]]:
    """`count` connections that send nothing (each connect is bounded), closed at the end."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            opened.append(connect(url, source))
        yield opened
    finally:
        for sock in opened:
            sock.close()


def closed_by_server(sock: socket.socket, within: float) -> tuple[bool, bytes]:
    """Whether the server closed `sock` within `within` seconds, and what it sent first."""
    sock.settimeout(within)
    received = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True, received
            received += chunk
    except ConnectionResetError:
        return True, received
    except TimeoutError:
        return False, received


@pytest.fixture
def harness() -> Iterator[Harness]:
    with Harness("http-limits") as h:
        yield h


# ------------------------------------------------------------------ the request head


@pytest.mark.parametrize("shape", ["endless-header-lines", "one-endless-header-value"])
def test_attack_endless_request_head_is_cut_at_the_head_cap(workspace_server: LiveServer, shape: str) -> None:
    """httptools buffers header lines without limit; the app's 32 KiB check only runs once
    they are complete. The protocol cuts the head at 64 KiB, whatever its shape."""
    pid = workspace_server.process.pid
    rss_before = rss_bytes(pid)
    budget = 32 << 20
    sock = connect(workspace_server.url)
    sent = 0
    cut = False
    try:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        if shape == "one-endless-header-value":
            sock.sendall(b"X-Endless: ")
        line = b"X-Filler: " + b"a" * 1000 + b"\r\n" if shape == "endless-header-lines" else b"b" * 1024
        while sent < budget:
            try:
                sock.sendall(line * 64)
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            sent += len(line) * 64
        closed, answer = closed_by_server(sock, 10)
    finally:
        sock.close()
    assert cut or closed, f"the server took {sent} bytes of request head and kept the connection"
    if answer:
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
        assert b"HEADERS_TOO_LARGE" in answer
    growth = rss_bytes(pid) - rss_before
    assert growth < 16 << 20, f"the server grew by {growth >> 20} MiB on one request head"
    assert httpx.get(workspace_server.url + "/healthz", timeout=10).status_code == 200


# ------------------------------------------------------------------ idle and slow connections


def test_attack_connections_that_never_send_a_request_are_closed_and_capped_per_peer(harness: Harness) -> None:
    harness.start(
        extra=[
            "--request-head-timeout",
            "1",
            "--request-body-idle-timeout",
            "1",
            "--max-connections",
            "100",
            "--max-connections-per-peer",
            "40",
        ]
    )
    with connections(harness.url, 50) as flood:
        time.sleep(0.3)
        refused = [closed_by_server(sock, 0.2) for sock in flood[40:]]
        assert all(closed and answer.startswith(b"HTTP/1.1 429") for closed, answer in refused), refused
        assert all(b"RESOURCE_EXHAUSTED" in answer for _, answer in refused)
        # Another peer is still served while this one holds its share.
        with victim_client(harness.url) as victim:
            assert victim.get("/healthz").status_code == 200
        # Connections that never sent a request are closed after the head timeout.
        held = [closed_by_server(sock, 5) for sock in flood[:40]]
        assert all(closed for closed, _ in held), "idle connections were kept open"
    # A head that stops half-way, and a body that stops arriving, are cut too.
    with connections(harness.url, 2) as (slow_head, slow_body):
        slow_head.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        slow_body.sendall(
            b"POST /api/v1/sandboxes HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            b"Content-Length: 1000\r\n\r\n{"
        )
        assert closed_by_server(slow_head, 5)[0], "a half-sent request head was kept open"
        closed, _answer = closed_by_server(slow_body, 5)
        assert closed, "a request body that stopped arriving was kept open"
    # The slots are given back: the attacker's address is served again.
    with connections(harness.url, 40):
        pass
    assert httpx.get(harness.url + "/healthz", timeout=10).status_code == 200


# ------------------------------------------------------------------ open files


def open_files_limits(pid: int) -> tuple[int, int]:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open files line")


def test_attack_connection_flood_under_the_usual_soft_limit_leaves_creates_working(harness: Harness) -> None:
    """Started with the soft limit a root shell gets (1024), the server raises it to the hard
    limit and says so; 1100 idle connections then cost creates and deletes nothing."""
    harness.start(wrapper=["prlimit", "--nofile=1024:16384"])
    assert open_files_limits(harness.pid) == (16384, 16384)
    assert "open files limit raised from 1024 to 16384" in harness.log()
    with connections(harness.url, 1100), victim_client(harness.api_url) as victim:
        for _ in range(2):
            created = victim.post("/sandboxes", json={})
            assert created.status_code == 201, created.text
            sandbox_id = created.json()["id"]
            ran = victim.post(f"/sandboxes/{sandbox_id}/processes/run", json={"command": "echo", "args": ["ok"]})
            assert ran.status_code == 200 and ran.json()["stdout"] == "ok\n", ran.text
            deleted = victim.delete(f"/sandboxes/{sandbox_id}", params={"force": "true"})
            assert deleted.status_code == 204, deleted.text


def test_running_out_of_open_files_is_resource_exhausted_and_leaves_no_sandbox_untracked(harness: Harness) -> None:
    """A hard limit the server cannot raise, and caps set above it by the operator: open
    files run out. Creates and deletes then answer 429 RESOURCE_EXHAUSTED (never 500), and
    every sandbox that holds host resources stays tracked and is torn down in the end."""
    harness.start(
        pool_size=1,
        wrapper=["prlimit", "--nofile=4300:4300"],
        extra=["--max-connections", "9000", "--max-connections-per-peer", "9000"],
    )
    assert "open files limit 4300 is low" in harness.log()
    statuses: list[tuple[int, str]] = []
    with victim_client(harness.api_url, timeout=120) as victim:
        first = victim.post("/sandboxes", json={})
        assert first.status_code == 201, first.text
        kept = first.json()["id"]
        with connections(harness.url, 4400):
            time.sleep(0.5)
            for attempt in range(4):
                try:
                    if attempt < 3:
                        answer = victim.post("/sandboxes", json={"disk_mb": 64})
                    else:
                        answer = victim.delete(f"/sandboxes/{kept}", params={"force": "true"})
                except httpx.TransportError:
                    continue  # the server could not accept a new connection: no answer, no 500
                statuses.append((answer.status_code, answer.json().get("code", "") if answer.content else ""))
        assert all(status < 500 for status, _ in statuses), statuses
        assert any(code == "RESOURCE_EXHAUSTED" for _, code in statuses), statuses
        assert all(code in ("", "RESOURCE_EXHAUSTED") for _, code in statuses), statuses
        # Once files are back, everything still holding resources is listed, then removed.
        time.sleep(1.5)
        for sandbox in victim.get("/sandboxes").json()["sandboxes"]:
            victim.delete(f"/sandboxes/{sandbox['id']}", params={"force": "true"})
        wait_until(lambda: victim.get("/sandboxes").json()["sandboxes"] == [], 30, 0.2, "every sandbox to go")
    assert harness.terminate() in (0, -15)
    harness.note_ids()
    assert runc_ids(harness.data_dir) == [] and bundle_ids(harness.data_dir) == [], harness.log_tail()
