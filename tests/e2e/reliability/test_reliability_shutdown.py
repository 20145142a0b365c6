"""Graceful shutdown (SIGTERM).

Guarantees under test: the server stops accepting connections at once, lets in-flight
requests finish, cuts what never finishes after a bounded grace (10 s) so it always exits,
drops its warm pool, and leaves user sandboxes running for the next server to re-adopt.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.reliability.reliability_support import (
    SANDBOX_ID,
    Harness,
    api_processes,
    asse_events,
    bundle_ids,
    create,
    ps_commands,
    runc_ids,
    runc_status,
    sh,
    wait_pool_full,
    wait_until,
)

POOL_FILLING = 6  # per template: the pool is still filling when the server stops
SERVER_GRACE = 10.0  # uvicorn's timeout_graceful_shutdown in `workspace serve`
EXIT_BOUND = SERVER_GRACE + 5.0


async def test_sigterm_drains_in_flight_work_and_leaves_sandboxes_running() -> None:
    with Harness("sigterm") as h:
        h.start(pool_size=1)
        with h.client() as c:
            sandbox_id = create(c)["id"]
            sh(c, sandbox_id, "echo kept > /workspace/kept.txt")
            wait_pool_full(h, 1)
        warm = set(bundle_ids(h.data_dir)) - {sandbox_id}

        async with h.async_client() as ac:

            async def in_flight_run() -> tuple[httpx.Response, float]:
                started = time.monotonic()
                response = await ac.post(
                    f"/sandboxes/{sandbox_id}/processes/run", json={"command": "sleep", "args": ["1"]}
                )
                return response, time.monotonic() - started

            async def endless_stream() -> tuple[list[tuple[str, dict[str, Any]]], str | None]:
                events: list[tuple[str, dict[str, Any]]] = []
                try:
                    async with ac.stream(
                        "POST", f"/sandboxes/{sandbox_id}/processes/stream", json={"command": "sleep", "args": ["300"]}
                    ) as response:
                        async for event in asse_events(response.aiter_lines()):
                            events.append(event)
                except httpx.HTTPError as exc:
                    return events, type(exc).__name__
                return events, None

            async def open_pty() -> tuple[list[Any], int | None]:
                frames: list[Any] = []
                async with connect(h.ws_url(f"/sandboxes/{sandbox_id}/pty"), open_timeout=10) as ws:
                    try:
                        while True:
                            frames.append(await ws.recv())
                    except ConnectionClosed:
                        pass
                    return frames, ws.close_code

            run_task = asyncio.create_task(in_flight_run())
            stream_task = asyncio.create_task(endless_stream())
            pty_task = asyncio.create_task(open_pty())
            with h.client() as c:
                await asyncio.to_thread(
                    wait_until,
                    lambda: len(api_processes(c, sandbox_id)) == 3,
                    10,
                    0.02,
                    "the run, the stream and the pty to be running",
                )

            terminated = time.monotonic()
            os.kill(h.pid, signal.SIGTERM)
            await asyncio.sleep(0.5)

            # No new work once shutdown began: the listener is closed (or answers 503).
            try:
                async with httpx.AsyncClient(timeout=2) as fresh:
                    late = await fresh.get(h.api_url + f"/sandboxes/{sandbox_id}")
                assert late.status_code == 503, f"a request after SIGTERM was served: {late.status_code}"
            except httpx.ConnectError:
                pass

            # The in-flight command completes normally.
            response, took = await asyncio.wait_for(run_task, 10)
            assert response.status_code == 200, response.text
            assert response.json()["exit_code"] == 0 and took >= 1.0

            # What never ends is cut within the grace: no client hangs.
            events, stream_error = await asyncio.wait_for(stream_task, EXIT_BOUND)
            assert events and events[0][0] == "start", events
            assert stream_error is not None or events[-1][0] in ("exit", "error"), events
            frames, _ = await asyncio.wait_for(pty_task, EXIT_BOUND)
            assert frames and json.loads(frames[0])["type"] == "ready"

        await asyncio.to_thread(h.server.process.wait, EXIT_BOUND)  # type: ignore[union-attr]
        assert time.monotonic() - terminated <= EXIT_BOUND, "the server did not exit within its grace"
        print(f"\nSIGTERM to exit: {time.monotonic() - terminated:.2f} s, exit status {h.server.process.returncode}")  # type: ignore[union-attr]

        # Defined state: the user sandbox keeps running; the warm pool is gone.
        assert runc_status(h.data_dir, sandbox_id) == "running"
        h.assert_no_leftovers(warm)

        h.start()
        with h.client() as c:
            assert c.get(f"/sandboxes/{sandbox_id}").json()["state"] == "running"
            assert sh(c, sandbox_id, "cat /workspace/kept.txt") == "kept\n"
            # The stream and the pty that were cut did not leave their processes behind.
            assert api_processes(c, sandbox_id) == []
            assert not [p for p in ps_commands(c, sandbox_id) if "sleep 300" in p or "bash" in p]
            assert c.delete(f"/sandboxes/{sandbox_id}").status_code == 204
        h.assert_data_dir_empty()


def test_sigterm_while_the_pool_fills_leaves_no_pool_sandbox() -> None:
    """A SIGTERM can land while a warm sandbox is half made (runc still running, the agent
    not yet connected, the warm-up command in flight): whatever the moment, none is left:
    no runc container, bundle, mount, loop device, cgroup or process."""
    with Harness("sigterm-pool") as h:
        for delay in (0.05, 0.15, 0.3, 0.6, 1.2):
            h.start(pool_size=POOL_FILLING)
            time.sleep(delay)
            h.terminate()
            assert runc_ids(h.data_dir) == [], delay
            assert bundle_ids(h.data_dir) == [], delay
            h.assert_no_leftovers(SANDBOX_ID.findall(h.log()))


def test_a_crash_while_the_pool_fills_is_cleaned_up_by_the_next_start() -> None:
    """kill -9 while warm sandboxes are being started leaves them half made; the next
    server's recovery tears every one of them down (they have no record)."""
    with Harness("crash-pool") as h:
        left_by_crashes: list[str] = []
        for delay in (0.1, 0.6):
            h.start(pool_size=POOL_FILLING)
            time.sleep(delay)
            h.crash()
            half_made = bundle_ids(h.data_dir)
            left_by_crashes += half_made
            h.start()
            h.terminate()
            h.assert_no_leftovers([*half_made, *SANDBOX_ID.findall(h.log())])
            h.assert_data_dir_empty()
        assert left_by_crashes, "no crash landed while the pool was filling"


def test_a_second_signal_while_stopping_still_drops_the_warm_pool() -> None:
    """Ctrl-C of `make run` reaches the server twice (the terminal's SIGINT to the whole
    process group, and the script's own SIGTERM): uvicorn then forces its exit, which skipped
    the application's shutdown, and the warm sandboxes kept running with their mounts until
    a next server started on the data dir. Forced or not, the pool is dropped."""
    with Harness("double-signal") as h:
        for first, second in ((signal.SIGTERM, signal.SIGINT), (signal.SIGINT, signal.SIGINT)):
            h.start(pool_size=2)
            wait_pool_full(h, 2)
            assert h.server is not None
            h.note_ids()
            h.server.process.send_signal(first)
            wait_until(lambda: "Shutting down" in h.log(), timeout=5)  # the first one was taken
            h.server.process.send_signal(second)  # uvicorn: "press CTRL+C again to force quit"
            h.server.process.wait(timeout=EXIT_BOUND)
            assert runc_ids(h.data_dir) == [], (first, second, h.log_tail())
            assert bundle_ids(h.data_dir) == [], (first, second)
            h.assert_no_leftovers(SANDBOX_ID.findall(h.log()))
