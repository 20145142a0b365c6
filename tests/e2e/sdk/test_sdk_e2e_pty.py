"""Terminal sessions on both clients against a live server."""

from __future__ import annotations

import threading

from tests.support.http_api import async_wait_until, wait_until
from workspace_sdk import AsyncWorkspaceClient, PtyOptions, WorkspaceClient

# The shell computes the marker, so seeing it proves a round trip (not just the echoed input).
MARKER_COMMAND = "echo marker-$((6 * 7))-ok\n"
MARKER = b"marker-42-ok"
PTY_WAIT = 15.0


class Collected:
    """Output collector that the sync client's reader thread can fill safely."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.lock = threading.Lock()

    def __call__(self, chunk: bytes) -> None:
        with self.lock:
            self.data += chunk

    def has(self, needle: bytes) -> bool:
        with self.lock:
            return needle in self.data


def test_sync_pty_marker_round_trip(client: WorkspaceClient, sandbox_id: str) -> None:
    output = Collected()
    callback_threads: set[str] = set()

    def on_data(chunk: bytes) -> None:
        callback_threads.add(threading.current_thread().name)
        output(chunk)

    with client.pty.connect(sandbox_id, PtyOptions(cols=100, rows=30)) as pty:
        assert pty.pty_id and pty.pid > 0
        pty.on_data(on_data)
        pty.write(MARKER_COMMAND)
        wait_until(lambda: output.has(MARKER), PTY_WAIT, what="PTY output")
        assert pty.pty_id in {p.pty_id for p in client.pty.list(sandbox_id)}
        pty.write("exit 3\n")
        assert pty.wait(timeout=15) == 3
    # Live output comes from the reader thread (only output buffered before on_data() was
    # called may have been flushed on this thread, from within that call).
    assert any(name.startswith("workspace-pty-") for name in callback_threads)


async def test_async_pty_marker_round_trip(aclient: AsyncWorkspaceClient, sandbox_id: str) -> None:
    output = Collected()
    async with await aclient.pty.connect(sandbox_id, PtyOptions(cols=100, rows=30, shell="/bin/bash")) as pty:
        pty.on_data(output)
        await pty.write(MARKER_COMMAND.encode())
        await async_wait_until(lambda: output.has(MARKER), PTY_WAIT, what="PTY output")
        await pty.kill()
        assert await pty.wait(timeout=15) is not None
    assert pty.closed


def test_detach_and_reattach_replays_output(client: WorkspaceClient, sandbox_id: str) -> None:
    first = Collected()
    pty = client.pty.connect(sandbox_id)
    pty.on_data(first)
    pty.write(MARKER_COMMAND)
    wait_until(lambda: first.has(MARKER), PTY_WAIT, what="PTY output")
    pty.close()  # detach: the shell keeps running

    replay = Collected()
    with client.pty.attach(sandbox_id, pty.pty_id) as again:
        again.on_data(replay)
        wait_until(lambda: replay.has(MARKER), PTY_WAIT, what="PTY output")
        assert again.pty_id == pty.pty_id
        again.kill()
        again.wait(timeout=15)


def test_rest_resize_and_kill(client: WorkspaceClient, sandbox_id: str) -> None:
    output = Collected()
    with client.pty.connect(sandbox_id) as pty:
        pty.on_data(output)
        client.pty.resize(sandbox_id, pty.pty_id, 132, 43)
        pty.write("stty size\n")
        wait_until(lambda: output.has(b"43 132"), PTY_WAIT, what="PTY output")
        client.pty.kill(sandbox_id, pty.pty_id)
        assert pty.wait(timeout=15) is not None


def test_closing_the_client_closes_open_ptys(server_url: str, sandbox_id: str) -> None:
    with WorkspaceClient(server_url) as owner:
        pty = owner.pty.connect(sandbox_id)
    assert pty.closed
