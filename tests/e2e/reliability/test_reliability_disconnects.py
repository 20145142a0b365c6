"""Clients that go away mid-request.

Guarantees under test (docs/api.md): a client that disconnects from a streamed or a run
command gets the command KILLED (its process group gets SIGKILL); an upload cut short
leaves neither a half-written file nor a `.ws-upload-*` temp file, and an existing file at
that path keeps its old content; a download cut short and a PTY WebSocket closed by the
client (which detaches without killing) leave nothing behind. The server's open fds come
back to where they were after each of these.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect

from tests.e2e.reliability.reliability_support import (
    Harness,
    api_processes,
    create,
    fd_count,
    list_workspace,
    ps_commands,
    run,
    settle_fds,
    sh,
    wait_until,
)

REPEATS = 5  # each disconnect is repeated so that a leak of one fd per disconnect shows
FLOOD_REPEATS = 16  # the flooding case fails at random (about 1 disconnect in 4): enough tries to see it
FD_SLACK = 2  # the event loop may keep a spare fd or two (e.g. a cached socket) at any moment
KILL_BOUND = 2.0  # seconds for a disconnected client's command to be gone


@pytest.fixture(scope="module")
def harness() -> Iterator[Harness]:
    with Harness("disconnects") as h:
        h.start()
        yield h


@pytest.fixture
def sandbox(harness: Harness) -> Iterator[str]:
    with harness.client() as c:
        sandbox_id = create(c)["id"]
        # Warm every code path once so lazily opened fds do not count as leaks.
        run(c, sandbox_id, "true")
        with c.stream("POST", f"/sandboxes/{sandbox_id}/processes/stream", json={"command": "true"}) as r:
            r.read()
        c.put(f"/sandboxes/{sandbox_id}/files", params={"path": "/workspace/warm"}, content=b"w")
        c.get(f"/sandboxes/{sandbox_id}/files", params={"path": "/workspace/warm"})
    yield sandbox_id
    with harness.client() as c:
        c.delete(f"/sandboxes/{sandbox_id}", params={"force": "true"})
    harness.assert_no_leftovers([sandbox_id])


def _baseline(h: Harness) -> int:
    time.sleep(0.2)  # let keep-alive connections of earlier clients close
    return fd_count(h.pid)


def _assert_fds_back(h: Harness, baseline: int) -> None:
    count = settle_fds(h.pid, baseline + FD_SLACK, timeout=5)
    assert count <= baseline + FD_SLACK, f"server fds grew from {baseline} to {count}"


def _no_sandbox_commands(c: httpx.Client, sandbox_id: str, needle: str) -> bool:
    return not api_processes(c, sandbox_id) and not [p for p in ps_commands(c, sandbox_id) if needle in p]


def test_sse_client_disconnect_kills_the_command(harness: Harness, sandbox: str) -> None:
    h = harness
    baseline = _baseline(h)
    with h.client() as c:
        for i in range(REPEATS):
            with httpx.Client(base_url=h.api_url, timeout=30) as streaming:
                with streaming.stream(
                    "POST", f"/sandboxes/{sandbox}/processes/stream", json={"command": "sleep", "args": [str(300 + i)]}
                ) as response:
                    for line in response.iter_lines():
                        if line.startswith("data:"):
                            break  # the start event: then the client goes away
            wait_until(
                lambda: _no_sandbox_commands(c, sandbox, "sleep 30"),
                KILL_BOUND,
                what="the streamed command to be killed",
            )
    _assert_fds_back(h, baseline)


def test_sse_client_disconnect_while_output_flows_kills_the_command(harness: Harness, sandbox: str) -> None:
    """The producer is blocked on flow control when the client leaves; it must still die."""
    h = harness
    baseline = _baseline(h)
    with h.client() as c:
        for _ in range(FLOOD_REPEATS):
            with httpx.Client(base_url=h.api_url, timeout=30) as streaming:
                with streaming.stream(
                    "POST", f"/sandboxes/{sandbox}/processes/stream", json={"command": "yes", "args": ["flood"]}
                ) as response:
                    received = 0
                    for chunk in response.iter_bytes():
                        received += len(chunk)
                        if received > 256 * 1024:
                            break
            wait_until(
                lambda: _no_sandbox_commands(c, sandbox, "yes flood"),
                KILL_BOUND,
                what="the flooding command to be killed",
            )
    _assert_fds_back(h, baseline)


@pytest.mark.parametrize("argv", [["sleep", "300"], ["yes", "flood"]], ids=["idle", "flooding"])
def test_run_client_disconnect_kills_the_command(harness: Harness, sandbox: str, argv: list[str]) -> None:
    h = harness
    baseline = _baseline(h)
    with h.client() as c:
        for _ in range(REPEATS):
            with pytest.raises(httpx.ReadTimeout):
                httpx.post(
                    h.api_url + f"/sandboxes/{sandbox}/processes/run",
                    json={"command": argv[0], "args": argv[1:]},
                    timeout=httpx.Timeout(5, read=0.5),
                )
            wait_until(
                lambda: _no_sandbox_commands(c, sandbox, " ".join(argv)),
                KILL_BOUND,
                what="the run command to be killed",
            )
    _assert_fds_back(h, baseline)


def _abort_upload(h: Harness, sandbox_id: str, path: str, *, chunked: bool, reset: bool) -> None:
    """Send the head and 1 MiB of an 8 MiB PUT body, then vanish (FIN or RST)."""
    url = urlsplit(h.url)
    sock = socket.create_connection((url.hostname or "127.0.0.1", url.port or 80), timeout=10)
    try:
        framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {8 * 1024 * 1024}"
        sock.sendall(
            f"PUT /api/v1/sandboxes/{sandbox_id}/files?path={path} HTTP/1.1\r\nHost: {url.netloc}\r\n"
            f"Content-Type: application/octet-stream\r\n{framing}\r\n\r\n".encode()
        )
        for _ in range(16):
            data = b"p" * 65536
            sock.sendall(b"%x\r\n%s\r\n" % (len(data), data) if chunked else data)
        time.sleep(0.2)  # the server is now mid-upload, waiting for more
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("chunked", "reset"), [(False, False), (True, False), (False, True)], ids=["content-length", "chunked", "reset"]
)
def test_aborted_upload_leaves_no_partial_or_temp_file(
    harness: Harness, sandbox: str, chunked: bool, reset: bool
) -> None:
    h = harness
    with h.client() as c:
        put = c.put(f"/sandboxes/{sandbox}/files", params={"path": "/workspace/up/existing.bin"}, content=b"old")
        assert put.status_code == 200, put.text
        baseline = _baseline(h)
        for _ in range(REPEATS):
            _abort_upload(h, sandbox, "/workspace/up/new.bin", chunked=chunked, reset=reset)
            _abort_upload(h, sandbox, "/workspace/up/existing.bin", chunked=chunked, reset=reset)

        def clean() -> bool:
            names = list_workspace(c, sandbox, "/workspace/up")
            return names == ["existing.bin"]

        wait_until(clean, 5, what="the aborted uploads' temp files to be removed")
        assert sh(c, sandbox, "ls -A /workspace/up") == "existing.bin\n"
        got = c.get(f"/sandboxes/{sandbox}/files", params={"path": "/workspace/up/existing.bin"})
        assert got.content == b"old", "an aborted upload replaced the existing file"
        # The sandbox still takes uploads.
        assert (
            c.put(f"/sandboxes/{sandbox}/files", params={"path": "/workspace/up/new.bin"}, content=b"new").status_code
            == 200
        )
        c.delete(f"/sandboxes/{sandbox}/files", params={"path": "/workspace/up/new.bin"})
    _assert_fds_back(h, baseline)


def test_aborted_download_leaves_nothing_behind(harness: Harness, sandbox: str) -> None:
    h = harness
    with h.client() as c:
        sh(c, sandbox, "head -c 33554432 /dev/zero > /workspace/big.bin")
        baseline = _baseline(h)
        for _ in range(REPEATS):
            with httpx.Client(base_url=h.api_url, timeout=30) as downloading:
                with downloading.stream(
                    "GET", f"/sandboxes/{sandbox}/files", params={"path": "/workspace/big.bin"}
                ) as response:
                    assert response.status_code == 200
                    next(response.iter_bytes())
        assert run(c, sandbox, "true")["exit_code"] == 0
        full = c.get(f"/sandboxes/{sandbox}/files", params={"path": "/workspace/big.bin"})
        assert len(full.content) == 33554432
    _assert_fds_back(h, baseline)


async def test_closed_pty_websocket_detaches_and_kill_cleans_up(harness: Harness, sandbox: str) -> None:
    h = harness
    baseline = _baseline(h)
    pty_ids = []
    for _ in range(REPEATS):
        async with connect(h.ws_url(f"/sandboxes/{sandbox}/pty"), open_timeout=10) as ws:
            ready: dict[str, Any] = json.loads(await ws.recv())
            pty_ids.append(ready["pty_id"])
            await ws.send(b"echo attached\n")
    with h.client() as c:
        listed = {p["pty_id"] for p in c.get(f"/sandboxes/{sandbox}/pty").json()["ptys"]}
        assert listed == set(pty_ids), "closing the WebSocket must detach, not kill"
        for pty_id in pty_ids:
            assert c.post(f"/sandboxes/{sandbox}/pty/{pty_id}/kill").status_code == 204
        wait_until(lambda: c.get(f"/sandboxes/{sandbox}/pty").json()["ptys"] == [], 5, what="the ptys to exit")
        wait_until(lambda: _no_sandbox_commands(c, sandbox, "bash"), KILL_BOUND, what="the shells to exit")
    _assert_fds_back(h, baseline)


def test_client_disconnect_is_not_logged_as_a_server_error(harness: Harness, sandbox: str) -> None:
    h = harness
    before = len(h.log())
    _abort_upload(h, sandbox, "/workspace/quiet.bin", chunked=False, reset=False)
    with h.client() as c:
        wait_until(lambda: "quiet.bin" not in " ".join(list_workspace(c, sandbox)), 5, what="the temp file to go")
        assert not [n for n in list_workspace(c, sandbox) if n.startswith(".ws-upload-")]
    time.sleep(0.2)
    new = h.log()[before:]
    errors = [line for line in new.splitlines() if "level=ERROR" in line or line.startswith("Traceback")]
    assert not errors, "\n".join(errors)
