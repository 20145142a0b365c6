"""Agent death: `kill -9` of a sandbox's init (the agent) from the host.

Guarantees under test: within a second every call on that sandbox answers
AGENT_NOT_CONNECTED (HTTP 503, the error envelope), GET shows state `error` with a reason,
open SSE streams end with an `error` event and open PTY WebSockets with an error frame and
close code 4503 (never a hang), in-flight runs and uploads fail the same way, other
sandboxes are untouched, and DELETE still removes everything the sandbox held.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
from typing import Any
from urllib.parse import urlsplit

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.reliability.reliability_support import (
    Harness,
    asse_events,
    create,
    envelope,
    run,
    sh,
)

FAIL_FAST = 1.0  # seconds from the kill to the failure every caller sees


def _assert_agent_not_connected(response: httpx.Response, sandbox_id: str, what: str) -> None:
    assert response.status_code == 503, f"{what}: {response.status_code} {response.text}"
    body = envelope(response)
    assert body["code"] == "AGENT_NOT_CONNECTED", f"{what}: {body}"
    assert body["details"].get("sandbox_id") == sandbox_id, f"{what}: {body}"


async def test_agent_kill_fails_every_call_fast_and_delete_cleans_up() -> None:
    with Harness("agent-death") as h:
        h.start()
        with h.client() as c:
            victim = create(c)["id"]
            bystander = create(c)["id"]
            sh(c, victim, "echo hi > /workspace/a.txt")
            sh(c, bystander, "echo safe > /workspace/b.txt")

        async with h.async_client() as ac:
            stream_started = asyncio.Event()

            async def open_stream() -> tuple[list[tuple[str, dict[str, Any]]], float]:
                events: list[tuple[str, dict[str, Any]]] = []
                async with ac.stream(
                    "POST", f"/sandboxes/{victim}/processes/stream", json={"command": "sleep", "args": ["30"]}
                ) as response:
                    assert response.status_code == 200
                    async for event in asse_events(response.aiter_lines()):
                        events.append(event)
                        if event[0] == "start":
                            stream_started.set()
                return events, time.monotonic()

            pty_ready = asyncio.Event()

            async def open_pty() -> tuple[list[dict[str, Any]], int | None, float]:
                texts: list[dict[str, Any]] = []
                async with connect(h.ws_url(f"/sandboxes/{victim}/pty"), open_timeout=10) as ws:
                    try:
                        while True:
                            frame = await ws.recv()
                            if isinstance(frame, str):
                                texts.append(json.loads(frame))
                                pty_ready.set()
                    except ConnectionClosed:
                        pass
                    return texts, ws.close_code, time.monotonic()

            async def in_flight_run() -> tuple[httpx.Response, float]:
                response = await ac.post(
                    f"/sandboxes/{victim}/processes/run", json={"command": "sleep", "args": ["30"]}
                )
                return response, time.monotonic()

            stream_task = asyncio.create_task(open_stream())
            pty_task = asyncio.create_task(open_pty())
            await asyncio.wait_for(asyncio.gather(stream_started.wait(), pty_ready.wait()), 10)
            run_task = asyncio.create_task(in_flight_run())
            await asyncio.sleep(0.3)

            killed_at = time.monotonic()
            os.kill(h.init_pid(victim), signal.SIGKILL)

            # New calls fail fast.
            while True:
                response = await ac.post(f"/sandboxes/{victim}/processes/run", json={"command": "true"})
                if response.status_code != 200 or time.monotonic() - killed_at > 5:
                    break
                await asyncio.sleep(0.02)
            first_failure = time.monotonic() - killed_at
            _assert_agent_not_connected(response, victim, "run after the kill")
            assert first_failure <= FAIL_FAST, f"calls still succeeded {first_failure:.2f} s after the kill"

            # Open streams end with an error, never hang.
            events, stream_end = await asyncio.wait_for(stream_task, 5)
            assert events[-1][0] == "error" and events[-1][1]["code"] == "AGENT_NOT_CONNECTED", events
            assert stream_end - killed_at <= FAIL_FAST
            texts, close_code, pty_end = await asyncio.wait_for(pty_task, 5)
            assert texts[-1]["type"] == "error" and texts[-1]["code"] == "AGENT_NOT_CONNECTED", texts
            assert close_code == 4503 and pty_end - killed_at <= FAIL_FAST
            response, run_end = await asyncio.wait_for(run_task, 5)
            _assert_agent_not_connected(response, victim, "in-flight run")
            assert run_end - killed_at <= FAIL_FAST
            print(
                f"\nfirst 503 after {first_failure * 1000:.0f} ms; stream error after "
                f"{(stream_end - killed_at) * 1000:.0f} ms; pty error after {(pty_end - killed_at) * 1000:.0f} ms"
            )

            # A PTY opened now gets the error frame and 4503 too.
            async with connect(h.ws_url(f"/sandboxes/{victim}/pty"), open_timeout=10) as ws:
                frame = json.loads(await asyncio.wait_for(ws.recv(), 5))
                assert frame["type"] == "error" and frame["code"] == "AGENT_NOT_CONNECTED", frame
                try:
                    await asyncio.wait_for(ws.recv(), 5)
                except ConnectionClosed:
                    pass
                assert ws.close_code == 4503

        with h.client() as c:
            base = f"/sandboxes/{victim}"
            calls: list[tuple[str, httpx.Response]] = [
                ("run", c.post(f"{base}/processes/run", json={"command": "true"})),
                ("stream", c.post(f"{base}/processes/stream", json={"command": "true"})),
                ("list processes", c.get(f"{base}/processes")),
                ("kill process", c.post(f"{base}/processes/1/kill", json={"signal": 15})),
                ("download", c.get(f"{base}/files", params={"path": "/workspace/a.txt"})),
                ("upload", c.put(f"{base}/files", params={"path": "/workspace/b.txt"}, content=b"x")),
                ("list files", c.get(f"{base}/files/list", params={"path": "/workspace"})),
                ("stat", c.get(f"{base}/files/stat", params={"path": "/workspace/a.txt"})),
                ("exists", c.get(f"{base}/files/exists", params={"path": "/workspace/a.txt"})),
                ("mkdir", c.post(f"{base}/files/mkdir", json={"path": "/workspace/d"})),
                ("move", c.post(f"{base}/files/move", json={"source": "/workspace/a.txt", "destination": "c"})),
                ("copy", c.post(f"{base}/files/copy", json={"source": "/workspace/a.txt", "destination": "c"})),
                ("remove", c.delete(f"{base}/files", params={"path": "/workspace/a.txt"})),
            ]
            for what, response in calls:
                _assert_agent_not_connected(response, victim, what)

            record = c.get(base).json()
            assert record["state"] == "error", record
            assert "agent" in (record["error_message"] or "").lower(), record
            running = [s["id"] for s in c.get("/sandboxes", params={"state": "running"}).json()["sandboxes"]]
            errored = [s["id"] for s in c.get("/sandboxes", params={"state": "error"}).json()["sandboxes"]]
            assert victim not in running and victim in errored

            # The other sandbox never noticed.
            assert sh(c, bystander, "cat /workspace/b.txt") == "safe\n"

            # DELETE still cleans up everything the dead sandbox held.
            assert c.delete(base).status_code == 204
            assert c.get(base).status_code == 404
            h.assert_no_leftovers([victim])
            assert run(c, bystander, "true")["exit_code"] == 0
            assert c.delete(f"/sandboxes/{bystander}").status_code == 204
        h.assert_data_dir_empty()


async def test_agent_kill_fails_an_upload_in_flight_fast() -> None:
    """An upload whose body is still arriving is answered 503 as soon as the agent dies.

    Spoken as raw HTTP/1.1 so the early answer is seen while the body is still being sent
    (HTTP clients usually read the response only after sending the whole body)."""
    with Harness("agent-death-upload") as h:
        h.start()
        with h.client() as c:
            victim = create(c)["id"]
        url = urlsplit(h.url)
        reader, writer = await asyncio.open_connection(url.hostname, url.port)
        try:
            writer.write(
                f"PUT /api/v1/sandboxes/{victim}/files?path=/workspace/up.bin HTTP/1.1\r\n"
                f"Host: {url.netloc}\r\nContent-Type: application/octet-stream\r\n"
                "Transfer-Encoding: chunked\r\n\r\n".encode()
            )
            chunk = b"%x\r\n" % 65536 + b"u" * 65536 + b"\r\n"

            async def feed() -> None:
                for _ in range(200):  # at most 10 s of body
                    writer.write(chunk)
                    await writer.drain()
                    await asyncio.sleep(0.05)

            feeder = asyncio.create_task(feed())
            await asyncio.sleep(0.5)
            killed_at = time.monotonic()
            os.kill(h.init_pid(victim), signal.SIGKILL)
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            finally:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await feeder
            answered = time.monotonic() - killed_at
            status = int(head.split(b" ", 2)[1])
            length = int(
                next(
                    line.split(b":", 1)[1]
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
            )
            body = json.loads(await asyncio.wait_for(reader.readexactly(length), 5))
        finally:
            writer.close()
        assert status == 503 and body["code"] == "AGENT_NOT_CONNECTED", (status, body)
        assert answered <= FAIL_FAST, f"the upload was answered {answered:.2f} s after the kill"
        with h.client() as c:
            assert c.delete(f"/sandboxes/{victim}").status_code == 204
        h.assert_data_dir_empty()
