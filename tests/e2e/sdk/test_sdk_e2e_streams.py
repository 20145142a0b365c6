"""Streams, cancellation and the three timeouts, against a live server."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable

import pytest

from workspace_sdk import (
    AsyncWorkspaceClient,
    ErrorEvent,
    ExitEvent,
    ProcessTimeoutError,
    RequestTimeoutError,
    RunCommandOptions,
    StderrEvent,
    StdoutEvent,
    WorkspaceClient,
)

TICKER = RunCommandOptions(args=["-c", "while true; do echo tick; sleep 0.05; done"])


def process_gone(list_pids: Callable[[], set[int]], pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid not in list_pids():
            return True
        time.sleep(0.1)
    return False


async def aprocess_gone(client: AsyncWorkspaceClient, sandbox_id: str, pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pid not in {p.pid for p in await client.process.list(sandbox_id)}:
            return True
        await asyncio.sleep(0.1)
    return False


def test_stream_events_in_order_sync(client: WorkspaceClient, sandbox_id: str) -> None:
    script = "echo out1; echo err1 >&2; sleep 0.2; printf 'out2'; exit 7"
    with client.process.run_stream(sandbox_id, "sh", RunCommandOptions(args=["-c", script])) as stream:
        assert stream.pid > 0
        events = list(stream)
    stdout = "".join(e.data for e in events if isinstance(e, StdoutEvent))
    stderr = "".join(e.data for e in events if isinstance(e, StderrEvent))
    assert (stdout, stderr) == ("out1\nout2", "err1\n")
    assert events[-1] == ExitEvent(code=7)
    assert stream.closed


async def test_stream_events_in_order_async(aclient: AsyncWorkspaceClient, sandbox_id: str) -> None:
    script = "echo out1; echo err1 >&2; sleep 0.2; printf 'out2'; exit 7"
    async with aclient.process.run_stream(sandbox_id, "sh", RunCommandOptions(args=["-c", script])) as stream:
        assert stream.pid > 0
        events = [event async for event in stream]
    assert "".join(e.data for e in events if isinstance(e, StdoutEvent)) == "out1\nout2"
    assert events[-1] == ExitEvent(code=7)


def test_stream_utf8_is_never_split(client: WorkspaceClient, sandbox_id: str) -> None:
    # 3000 snowmen (3 bytes each) in one write cross any chunk boundary the server uses.
    script = "python3 -c \"import sys; sys.stdout.write('\\u2603' * 3000)\""
    events = list(client.process.run_stream(sandbox_id, "sh", RunCommandOptions(args=["-c", script])))
    text = "".join(e.data for e in events if isinstance(e, StdoutEvent))
    assert text == "\u2603" * 3000


def test_breaking_out_of_a_stream_closes_it_and_kills_the_process(client: WorkspaceClient, sandbox_id: str) -> None:
    stream = client.process.run_stream(sandbox_id, "sh", TICKER)
    for event in stream:
        assert event == StdoutEvent(data="tick\n") or event.type == "stdout"
        break
    assert stream.closed  # the sync iterator is finalized as soon as the loop is left
    assert process_gone(lambda: {p.pid for p in client.process.list(sandbox_id)}, stream.pid)
    assert client.process.run(sandbox_id, "echo", RunCommandOptions(args=["still usable"])).stdout == "still usable\n"


async def test_breaking_out_of_an_async_stream_closes_it(aclient: AsyncWorkspaceClient, sandbox_id: str) -> None:
    stream = aclient.process.run_stream(sandbox_id, "sh", TICKER)
    async for _event in stream:
        break
    # The dropped async generator is finalized by the event loop on its next iteration(s).
    for _ in range(50):
        if stream.closed:
            break
        await asyncio.sleep(0.01)
    assert stream.closed
    assert await aprocess_gone(aclient, sandbox_id, stream.pid)
    assert (await aclient.process.run(sandbox_id, "true")).exit_code == 0


async def test_leaving_async_with_closes_deterministically(aclient: AsyncWorkspaceClient, sandbox_id: str) -> None:
    async with aclient.process.run_stream(sandbox_id, "sh", TICKER) as stream:
        async for _event in stream:
            break
    assert stream.closed
    assert await aprocess_gone(aclient, sandbox_id, stream.pid)


def test_kill_through_the_stream_pid(client: WorkspaceClient, sandbox_id: str) -> None:
    with client.process.run_stream(sandbox_id, "sleep", RunCommandOptions(args=["60"])) as stream:
        client.process.kill(sandbox_id, stream.pid, signal=9)
        events = list(stream)
    assert events == [ExitEvent(code=128 + 9)]


def test_stream_command_timeout_ends_with_error_event(client: WorkspaceClient, sandbox_id: str) -> None:
    options = RunCommandOptions(args=["-c", "echo started; sleep 30"], timeout=1)
    started = time.monotonic()
    events = list(client.process.run_stream(sandbox_id, "sh", options))
    assert time.monotonic() - started < 15
    assert events[0] == StdoutEvent(data="started\n")
    assert isinstance(events[-1], ErrorEvent)
    assert events[-1].code == "PROCESS_TIMEOUT"


def test_process_timeout_error_sync(client: WorkspaceClient, sandbox_id: str) -> None:
    started = time.monotonic()
    with pytest.raises(ProcessTimeoutError) as caught:
        client.process.run(sandbox_id, "sh", RunCommandOptions(args=["-c", "echo partial; sleep 30"], timeout=1))
    assert time.monotonic() - started < 15
    assert caught.value.stdout == "partial\n"
    assert caught.value.timeout == 1
    assert isinstance(caught.value, TimeoutError)


async def test_process_timeout_error_async(aclient: AsyncWorkspaceClient, sandbox_id: str) -> None:
    with pytest.raises(ProcessTimeoutError) as caught:
        await aclient.process.run(sandbox_id, "sleep", RunCommandOptions(args=["30"], timeout=1))
    assert caught.value.code == "PROCESS_TIMEOUT"


def test_command_timeout_outlasts_a_short_client_timeout(server_url: str, sandbox_id: str) -> None:
    """The request waits for the command's own timeout even when the client timeout is shorter."""
    with WorkspaceClient(server_url, timeout=1.0) as client:
        result = client.process.run(sandbox_id, "sleep", RunCommandOptions(args=["2.5"], timeout=10))
        assert result.exit_code == 0
        with pytest.raises(ProcessTimeoutError):
            client.process.run(sandbox_id, "sleep", RunCommandOptions(args=["30"], timeout=2))


def test_client_timeout_without_command_timeout(server_url: str, sandbox_id: str) -> None:
    with WorkspaceClient(server_url, timeout=1.0) as client:
        with pytest.raises(RequestTimeoutError) as caught:
            client.process.run(sandbox_id, "sleep", RunCommandOptions(args=["5"]))
        assert server_url in str(caught.value)
        assert client.process.run(sandbox_id, "true").exit_code == 0  # still usable


async def test_wait_for_cancellation_leaves_client_usable(aclient: AsyncWorkspaceClient, sandbox_id: str) -> None:
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(aclient.process.run(sandbox_id, "sleep", RunCommandOptions(args=["30"])), 1.0)
    result = await aclient.process.run(sandbox_id, "echo", RunCommandOptions(args=["after"]))
    assert result.stdout == "after\n"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+")
async def test_asyncio_timeout_cancels_request_and_stream(aclient: AsyncWorkspaceClient, sandbox_id: str) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0):
            await aclient.process.run(sandbox_id, "sleep", RunCommandOptions(args=["30"]))
    assert time.monotonic() - started < 5

    stream = aclient.process.run_stream(sandbox_id, "sh", TICKER)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(1.0), stream:
            async for _event in stream:
                pass
    assert stream.closed
    assert await aprocess_gone(aclient, sandbox_id, stream.pid)

    # Concurrent work on the same client is unaffected, before and after.
    results = await asyncio.gather(
        *(aclient.process.run(sandbox_id, "echo", RunCommandOptions(args=[str(i)])) for i in range(5))
    )
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(5)]


def test_stdin_is_delivered_and_closed(client: WorkspaceClient, sandbox_id: str) -> None:
    assert client.process.run(sandbox_id, "cat", RunCommandOptions(stdin="piped\n")).stdout == "piped\n"
    # Without stdin the command sees /dev/null instead of hanging on an open pipe.
    assert client.process.run(sandbox_id, "cat", RunCommandOptions(timeout=10)).stdout == ""


def test_quiet_stream_outlives_a_short_client_timeout(server_url: str, sandbox_id: str) -> None:
    """17 s without output, client timeout 2 s: the server's 15 s keepalive and the stream
    read timeout (max(timeout, 30 s)) keep the stream alive until the process speaks."""
    with WorkspaceClient(server_url, timeout=2.0) as client:
        options = RunCommandOptions(args=["-c", "sleep 17; echo done"])
        events = list(client.process.run_stream(sandbox_id, "sh", options))
    assert events == [StdoutEvent(data="done\n"), ExitEvent(code=0)]
