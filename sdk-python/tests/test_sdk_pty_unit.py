"""PTY sessions against an in-process fake of the server's WebSocket protocol (loopback only).

The fake speaks docs/api.md's PTY protocol: a ``ready`` frame, binary data both ways, JSON
``resize``/``kill`` control frames, ``exit``/``error`` frames and 44xx close codes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from websockets.sync.server import ServerConnection, serve

from workspace_sdk import (
    AgentNotConnectedError,
    PtyNotFoundError,
    PtyOptions,
    WaitTimeoutError,
    WorkspaceConnectionError,
    WorkspaceError,
)


class FakePtyServer:
    def __init__(self) -> None:
        self.paths: list[str] = []
        self.auth_headers: list[str | None] = []
        self.control_frames: list[dict[str, Any]] = []
        self.disconnects = 0
        self._server = serve(self._handle, "127.0.0.1", 0)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(5)

    def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        path = ws.request.path
        self.paths.append(path)
        self.auth_headers.append(ws.request.headers.get("Authorization"))
        if path.startswith("/api/v1/sandboxes/sbx-1/pty/pty-missing"):
            ws.send(
                json.dumps(
                    {
                        "type": "error",
                        "code": "PTY_NOT_FOUND",
                        "message": "pty pty-missing not found",
                    }
                )
            )
            ws.close(4404)
            return
        if path.startswith("/api/v1/sandboxes/sbx-silent/"):
            ws.close(4503, "agent not connected")
            return
        ws.send(json.dumps({"type": "ready", "pty_id": "pty-1", "pid": 42}))
        if path.startswith("/api/v1/sandboxes/sbx-1/pty/pty-1"):
            ws.send(b"replayed output")
        else:
            ws.send(b"prompt$ ")
        if path.startswith("/api/v1/sandboxes/sbx-vanish/"):
            ws.send(json.dumps({"type": "error", "code": "AGENT_NOT_CONNECTED", "message": "agent went away"}))
            ws.close(4503)
            return
        try:
            for message in ws:
                if isinstance(message, bytes):
                    ws.send(b"echo:" + message)
                    continue
                frame = json.loads(message)
                self.control_frames.append(frame)
                if frame["type"] == "resize":
                    ws.send(f"resized:{frame['cols']}x{frame['rows']}".encode())
                elif frame["type"] == "kill":
                    ws.send(json.dumps({"type": "exit", "code": 137}))
                    ws.close(1000)
                    return
        finally:
            self.disconnects += 1


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakePtyServer]:
    server = FakePtyServer()
    yield server
    server.close()


def rest_handler(request: httpx.Request) -> httpx.Response:
    if request.url.path.endswith("/pty") and request.method == "GET":
        return httpx.Response(200, json={"ptys": [{"pty_id": "pty-1", "pid": 42, "cols": 80, "rows": 24}]})
    return httpx.Response(204)


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


class Output:
    """Thread-safe collector for on_data (the sync client calls it from its reader thread)."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._lock = threading.Lock()

    def __call__(self, data: bytes) -> None:
        with self._lock:
            self._data += data

    def __contains__(self, needle: bytes) -> bool:
        with self._lock:
            return needle in self._data


async def test_session_round_trip(driver: Any, fake_server: FakePtyServer) -> None:
    client = driver.client(rest_handler, api_url=fake_server.url, api_key="k")
    pty = await driver.call(client.pty.connect("sbx-1", PtyOptions(cols=120, rows=40, shell="/bin/bash")))
    assert (pty.pty_id, pty.pid, pty.sandbox_id) == ("pty-1", 42, "sbx-1")
    assert fake_server.paths[-1] == "/api/v1/sandboxes/sbx-1/pty?cols=120&rows=40&shell=%2Fbin%2Fbash"
    assert fake_server.auth_headers[-1] == "Bearer k"

    output = Output()
    assert pty.on_data(output) is output
    await eventually(lambda: b"prompt$ " in output)  # buffered before registration

    await driver.call(pty.write("ls -la\n"))
    await driver.call(pty.write(b"\x03"))
    await eventually(lambda: b"echo:ls -la\n" in output and b"echo:\x03" in output)

    await driver.call(pty.resize(100, 50))
    await eventually(lambda: b"resized:100x50" in output)
    assert {"type": "resize", "cols": 100, "rows": 50} in fake_server.control_frames

    assert pty.exit_code is None
    await driver.call(pty.kill())
    assert await driver.call(pty.wait(timeout=5)) == 137
    assert pty.exit_code == 137
    assert pty.closed
    await driver.call(pty.kill())  # no-op once exited
    await driver.call(pty.close())


async def test_defaults_and_context_manager(driver: Any, fake_server: FakePtyServer) -> None:
    client = driver.client(rest_handler, api_url=fake_server.url)
    pty = await driver.call(client.pty.connect("sbx-2"))
    assert fake_server.paths[-1] == "/api/v1/sandboxes/sbx-2/pty?cols=80&rows=24"
    disconnects = fake_server.disconnects
    entered = await driver.enter(pty)
    assert entered is pty
    await driver.exit(pty)
    assert pty.closed
    await eventually(lambda: fake_server.disconnects == disconnects + 1)
    assert await driver.call(pty.wait(timeout=5)) is None  # detached, never exited
    with pytest.raises(WorkspaceConnectionError, match="closed"):
        await driver.call(pty.write("too late"))


async def test_attach_replays_output(driver: Any, fake_server: FakePtyServer) -> None:
    client = driver.client(rest_handler, api_url=fake_server.url)
    pty = await driver.call(client.pty.attach("sbx-1", "pty-1"))
    output = Output()
    pty.on_data(output)
    await eventually(lambda: b"replayed output" in output)
    assert fake_server.paths[-1] == "/api/v1/sandboxes/sbx-1/pty/pty-1"
    await driver.call(pty.close())


async def test_attach_unknown_pty(driver: Any, fake_server: FakePtyServer) -> None:
    client = driver.client(rest_handler, api_url=fake_server.url)
    with pytest.raises(PtyNotFoundError) as caught:
        await driver.call(client.pty.attach("sbx-1", "pty-missing"))
    assert caught.value.pty_id == "pty-missing"
    assert str(caught.value) == "[PTY_NOT_FOUND] pty pty-missing not found"


async def test_close_code_without_error_frame(driver: Any, fake_server: FakePtyServer) -> None:
    client = driver.client(rest_handler, api_url=fake_server.url)
    with pytest.raises(AgentNotConnectedError) as caught:
        await driver.call(client.pty.connect("sbx-silent"))
    assert caught.value.sandbox_id == "sbx-silent"


async def test_error_during_session_is_raised_by_wait(driver: Any, fake_server: FakePtyServer) -> None:
    client = driver.client(rest_handler, api_url=fake_server.url)
    pty = await driver.call(client.pty.connect("sbx-vanish"))
    with pytest.raises(AgentNotConnectedError, match="agent went away"):
        await driver.call(pty.wait(timeout=5))
    with pytest.raises(WorkspaceError):
        await driver.call(pty.write("x"))


async def test_wait_timeout(driver: Any, fake_server: FakePtyServer) -> None:
    client = driver.client(rest_handler, api_url=fake_server.url)
    pty = await driver.call(client.pty.connect("sbx-1"))
    with pytest.raises(WaitTimeoutError):
        await driver.call(pty.wait(timeout=0.05))
    await driver.call(pty.close())


async def test_failing_callback_does_not_stop_the_session(driver: Any, fake_server: FakePtyServer) -> None:
    client = driver.client(rest_handler, api_url=fake_server.url)
    pty = await driver.call(client.pty.connect("sbx-1"))

    def broken(data: bytes) -> None:
        raise ValueError("callback bug")

    output = Output()
    pty.on_data(broken)
    pty.on_data(output)
    await driver.call(pty.write("still alive"))
    await eventually(lambda: b"echo:still alive" in output)
    await driver.call(pty.close())


async def test_closing_the_client_closes_its_sessions(driver: Any, fake_server: FakePtyServer) -> None:
    client = driver.client(rest_handler, api_url=fake_server.url)
    first = await driver.call(client.pty.connect("sbx-1"))
    second = await driver.call(client.pty.connect("sbx-1"))
    await driver.close(client)
    assert first.closed
    assert second.closed


async def test_rest_helpers(driver: Any) -> None:
    client = driver.client(rest_handler)
    ptys = await driver.call(client.pty.list("sbx-1"))
    assert [(p.pty_id, p.pid, p.cols, p.rows) for p in ptys] == [("pty-1", 42, 80, 24)]
    await driver.call(client.pty.resize("sbx-1", "pty-1", 100, 30))
    assert driver.requests[-1].url.path == "/api/v1/sandboxes/sbx-1/pty/pty-1/resize"
    assert json.loads(driver.requests[-1].content) == {"cols": 100, "rows": 30}
    await driver.call(client.pty.kill("sbx-1", "pty-1"))
    assert driver.requests[-1].url.path == "/api/v1/sandboxes/sbx-1/pty/pty-1/kill"


async def test_connection_refused(driver: Any) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = driver.client(rest_handler, api_url=f"http://127.0.0.1:{port}")
    with pytest.raises(WorkspaceConnectionError, match=f"ws://127.0.0.1:{port}/api/v1/sandboxes/s/pty"):
        await driver.call(client.pty.connect("s"))
