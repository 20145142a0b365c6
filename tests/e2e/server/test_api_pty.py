from __future__ import annotations

import json
import time
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from tests.support.live_server import LiveServer


def ws_url(server: LiveServer, path: str) -> str:
    return server.url.replace("http://", "ws://") + "/api/v1" + path


def read_until(ws: ClientConnection, marker: bytes, timeout: float = 10) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while marker not in seen:
        frame = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        if isinstance(frame, bytes):
            seen += frame
    return seen


def test_pty_echo_resize_and_exit(workspace_server: LiveServer, sandbox: dict[str, Any]) -> None:
    with connect(ws_url(workspace_server, f"/sandboxes/{sandbox['id']}/pty?cols=100&rows=30")) as ws:
        ready = json.loads(ws.recv(timeout=10))
        assert ready["type"] == "ready" and ready["pty_id"].startswith("pty-") and ready["pid"] > 0
        ws.send(b"stty size; echo MARK$((40+2))\n")
        assert b"30 100" in read_until(ws, b"MARK42")
        ws.send(json.dumps({"type": "resize", "cols": 120, "rows": 40}))
        ws.send(b"stty size; tty; echo DONE$((1+1))\n")
        out = read_until(ws, b"DONE2")
        assert b"40 120" in out and b"/dev/pts/" in out
        ws.send(b"exit 3\n")
        while True:
            frame = ws.recv(timeout=10)
            if isinstance(frame, str):
                assert json.loads(frame) == {"type": "exit", "code": 3}
                break


def test_pty_survives_detach_and_replays(
    workspace_server: LiveServer, api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    with connect(ws_url(workspace_server, f"/sandboxes/{sandbox['id']}/pty")) as ws:
        pty_id = json.loads(ws.recv(timeout=10))["pty_id"]
        ws.send(b"echo BEFORE$((2+2))\n")
        read_until(ws, b"BEFORE4")
    listed = api.get(f"/sandboxes/{sandbox['id']}/pty").json()["ptys"]
    assert pty_id in [p["pty_id"] for p in listed]
    with connect(ws_url(workspace_server, f"/sandboxes/{sandbox['id']}/pty/{pty_id}")) as ws:
        assert json.loads(ws.recv(timeout=10))["pty_id"] == pty_id
        read_until(ws, b"BEFORE4")  # replayed from the scrollback
    assert api.post(f"/sandboxes/{sandbox['id']}/pty/{pty_id}/resize", json={"cols": 50, "rows": 10}).status_code == 204
    assert api.post(f"/sandboxes/{sandbox['id']}/pty/{pty_id}/kill").status_code == 204
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and api.get(f"/sandboxes/{sandbox['id']}/pty").json()["ptys"]:
        time.sleep(0.05)
    assert api.get(f"/sandboxes/{sandbox['id']}/pty").json()["ptys"] == []


def test_unknown_pty_gets_pty_not_found(
    workspace_server: LiveServer, api: httpx.Client, sandbox: dict[str, Any]
) -> None:
    with connect(ws_url(workspace_server, f"/sandboxes/{sandbox['id']}/pty/pty-unknown")) as ws:
        error = json.loads(ws.recv(timeout=10))
        assert error["type"] == "error" and error["code"] == "PTY_NOT_FOUND"
    response = api.post(f"/sandboxes/{sandbox['id']}/pty/pty-unknown/kill")
    assert response.status_code == 404 and response.json()["code"] == "PTY_NOT_FOUND"


def test_pty_on_unknown_sandbox(workspace_server: LiveServer) -> None:
    with connect(ws_url(workspace_server, "/sandboxes/sbx-nope/pty")) as ws:
        error = json.loads(ws.recv(timeout=10))
        assert error["code"] == "SANDBOX_NOT_FOUND"
