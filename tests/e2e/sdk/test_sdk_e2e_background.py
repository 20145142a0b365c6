"""Background processes end to end (SDK -> server -> agent in a real sandbox), sync and async:
output kept by offset, reconnect with replay, several followers, stdin, tags, kill by tag."""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time

import pytest

from workspace_sdk import (
    AsyncWorkspaceClient,
    DroppedEvent,
    ExitEvent,
    ProcessHandle,
    ProcessNotFoundError,
    ProcessOutputEvent,
    RunCommandOptions,
    StderrEvent,
    StdinClosedError,
    StdoutEvent,
    TagInUseError,
    WorkspaceClient,
)

# Lines with their own number, so a byte missed or repeated anywhere shows.
LINES = 3000
COUNTER = RunCommandOptions(
    args=[
        "-c",
        f"import sys, time\nfor i in range({LINES}):\n    print('line %05d ' % i + 'x' * 40, flush=True)\n"
        "    if i % 100 == 0: time.sleep(0.02)\n",
    ],
)
EXPECTED = "".join(f"line {i:05d} " + "x" * 40 + "\n" for i in range(LINES))


def output_of(events: list[ProcessOutputEvent]) -> str:
    return "".join(e.data for e in events if isinstance(e, (StdoutEvent, StderrEvent)))


def follow(handle: ProcessHandle) -> list[ProcessOutputEvent]:
    return list(handle)


def test_start_runs_detached_and_events_carry_contiguous_offsets(client: WorkspaceClient, sandbox_id: str) -> None:
    script = "for i in 1 2 3; do echo out $i; echo err $i >&2; done; exit 3"
    handle = client.process.start(sandbox_id, "sh", RunCommandOptions(args=["-c", script]))
    assert handle.pid > 0
    events = follow(handle)
    exit_event = events[-1]
    assert isinstance(exit_event, ExitEvent)
    assert (exit_event.code, exit_event.signal, exit_event.timed_out) == (3, None, False)
    assert exit_event.finished_at
    out = "".join(e.data for e in events if isinstance(e, StdoutEvent))
    err = "".join(e.data for e in events if isinstance(e, StderrEvent))
    assert (out, err) == ("out 1\nout 2\nout 3\n", "err 1\nerr 2\nerr 3\n")
    offset = 0
    for event in events[:-1]:
        assert isinstance(event, (StdoutEvent, StderrEvent))
        assert event.offset == offset and event.end == offset + len(event.data.encode())
        offset = event.end
    assert exit_event.end == offset == handle.offset
    assert handle.wait() == exit_event
    info = client.process.get(sandbox_id, handle.pid)
    assert (info.state, info.exit_code, info.background, info.output_end) == ("exited", 3, True, offset)


def test_disconnect_then_reconnect_at_an_offset_byte_for_byte(client: WorkspaceClient, sandbox_id: str) -> None:
    handle = client.process.start(sandbox_id, "python3", COUNTER)
    received = ""
    for event in handle:
        assert isinstance(event, StdoutEvent)
        received += event.data
        if len(received) > 20_000:
            break
    handle.disconnect()
    assert handle.offset == len(received.encode())
    time.sleep(0.3)  # output goes on while nobody follows
    with WorkspaceClient(client.api_url) as other:
        again = other.process.connect(sandbox_id, handle.pid, offset=handle.offset)
        rest = follow(again)
        assert isinstance(rest[-1], ExitEvent) and rest[-1].code == 0
        assert received + output_of(rest) == EXPECTED
        # Any offset at all: exactly the bytes from there on.
        for offset in (0, 1, 12_345, len(EXPECTED) - 1, len(EXPECTED)):
            assert output_of(follow(other.process.connect(sandbox_id, handle.pid, offset=offset))) == EXPECTED[offset:]
        assert output_of(follow(other.process.connect(sandbox_id, handle.pid, offset=-100))) == EXPECTED[-100:]


def test_two_followers_at_once_get_every_byte(client: WorkspaceClient, sandbox_id: str) -> None:
    handle = client.process.start(sandbox_id, "python3", COUNTER)
    second = client.process.connect(sandbox_id, handle.pid)
    results: list[str] = []
    threads = [threading.Thread(target=lambda h=h: results.append(output_of(follow(h)))) for h in (handle, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results == [EXPECTED, EXPECTED]


def test_a_client_disconnect_never_kills_the_process(server_url: str, sandbox_id: str) -> None:
    with WorkspaceClient(server_url) as first:
        handle = first.process.start(sandbox_id, "sleep", RunCommandOptions(args=["300"]), tag="sleeper")
    with WorkspaceClient(server_url) as second:
        info = second.process.get(sandbox_id, "sleeper")
        assert (info.pid, info.state, info.command, info.args) == (handle.pid, "running", "sleep", ["300"])
        second.process.kill(sandbox_id, "sleeper", 9)
        exited = second.process.connect(sandbox_id, "sleeper").wait(10)
        assert (exited.code, exited.signal) == (137, 9)


def test_stdin_large_input_then_eof(client: WorkspaceClient, sandbox_id: str) -> None:
    data = hashlib.sha256(b"seed").digest() * (64 * 1024 * 1024 // 32)  # 64 MiB
    handle = client.process.start(sandbox_id, "sha256sum", stdin=True)
    handle.send_stdin(data)
    handle.close_stdin()
    events = follow(handle)
    assert events[-1] == ExitEvent(code=0, finished_at=events[-1].finished_at, end=handle.offset)  # type: ignore[union-attr]
    assert output_of(events).split()[0] == hashlib.sha256(data).hexdigest()


def test_stdin_round_trip_through_cat_and_clear_errors(client: WorkspaceClient, sandbox_id: str) -> None:
    cat = client.process.start(sandbox_id, "cat", stdin=True)
    events = iter(cat)
    cat.send_stdin("hello\n")
    assert next(events) == StdoutEvent(data="hello\n", offset=0, end=6)
    cat.send_stdin(b"\xc3\xa9t\xc3\xa9\n")
    assert next(events).data == "été\n"  # type: ignore[union-attr]
    cat.close_stdin()
    cat.close_stdin()  # idempotent
    with pytest.raises(StdinClosedError) as closed:
        cat.send_stdin("late")
    assert closed.value.reason == "closed"
    assert isinstance(next(events), ExitEvent)

    no_stdin = client.process.start(sandbox_id, "sh", RunCommandOptions(args=["-c", "cat; echo read-eof"]))
    assert output_of(follow(no_stdin)) == "read-eof\n"  # /dev/null: never waits for input
    with pytest.raises(StdinClosedError) as not_enabled:
        no_stdin.send_stdin("x")
    assert not_enabled.value.reason in ("not_enabled", "exited")

    exited = client.process.start(sandbox_id, "true", stdin=True)
    exited.wait(10)
    with pytest.raises(StdinClosedError) as gone:
        exited.send_stdin("x")
    assert gone.value.reason == "exited"


def test_tags_are_unique_among_running_processes_and_kill_by_tag(client: WorkspaceClient, sandbox_id: str) -> None:
    web = client.process.start(sandbox_id, "sleep", RunCommandOptions(args=["300"], cwd="/tmp", user="root"), tag="web")
    with pytest.raises(TagInUseError) as taken:
        client.process.start(sandbox_id, "sleep", RunCommandOptions(args=["1"]), tag="web")
    assert (taken.value.tag, taken.value.pid) == ("web", web.pid)
    listed = {p.pid: p for p in client.process.list(sandbox_id)}
    info = listed[web.pid]
    assert (info.tag, info.command, info.args, info.cwd, info.user) == ("web", "sleep", ["300"], "/tmp", "root")
    assert (info.state, info.exit_code, info.background) == ("running", None, True)
    assert info.started_at and info.started_at.endswith("Z")
    client.process.kill(sandbox_id, "web")
    exited = web.wait(10)
    assert (exited.code, exited.signal) == (143, 15)
    assert client.process.get(sandbox_id, "web").state == "exited"
    again = client.process.start(sandbox_id, "sleep", RunCommandOptions(args=["300"]), tag="web")
    assert client.process.get(sandbox_id, "web").pid == again.pid  # the running one wins
    again.kill(9)
    for call in (
        lambda: client.process.get(sandbox_id, "nope"),
        lambda: client.process.connect(sandbox_id, 999_999),
        lambda: client.process.kill(sandbox_id, "nope"),
        lambda: client.process.send_stdin(sandbox_id, 999_999, "x"),
    ):
        with pytest.raises(ProcessNotFoundError):
            call()


def test_the_log_keeps_the_most_recent_bytes_and_says_what_was_dropped(
    client: WorkspaceClient, sandbox_id: str
) -> None:
    handle = client.process.start(sandbox_id, "python3", COUNTER, log_bytes=64 * 1024)
    handle.wait(30)
    events = follow(client.process.connect(sandbox_id, handle.pid, offset=0))
    first = events[0]
    assert isinstance(first, DroppedEvent) and first.offset == 0
    assert 0 < len(EXPECTED) - first.end <= 64 * 1024
    assert output_of(events) == EXPECTED[first.end :]


def test_timeout_kills_the_process_and_says_so(client: WorkspaceClient, sandbox_id: str) -> None:
    handle = client.process.start(sandbox_id, "sleep", RunCommandOptions(args=["60"], timeout=0.5))
    exited = handle.wait(20)
    assert (exited.code, exited.signal, exited.timed_out) == (137, 9, True)


async def test_async_reconnect_two_followers_and_stdin(aclient: AsyncWorkspaceClient, sandbox_id: str) -> None:
    handle = await aclient.process.start(sandbox_id, "python3", COUNTER, tag="counter")
    received = ""
    async for event in handle:
        assert isinstance(event, StdoutEvent)
        received += event.data
        if len(received) > 10_000:
            break
    await handle.disconnect()

    async def rest(offset: int) -> str:
        follower = await aclient.process.connect(sandbox_id, "counter", offset=offset)
        return output_of([event async for event in follower])

    first, second = await asyncio.gather(rest(handle.offset), rest(0))
    assert (received + first, second) == (EXPECTED, EXPECTED)

    data = bytes(range(256)) * (64 * 1024 * 1024 // 256)
    summer = await aclient.process.start(sandbox_id, "sha256sum", stdin=True)
    await summer.send_stdin(data)
    await summer.close_stdin()
    assert (await summer.wait(30)).code == 0
    text = output_of([event async for event in summer])
    assert text.split()[0] == hashlib.sha256(data).hexdigest()
    with pytest.raises(StdinClosedError):
        await summer.send_stdin("x")
    sleeper = await aclient.process.start(sandbox_id, "sleep", RunCommandOptions(args=["300"]), tag="nap")
    with pytest.raises(TagInUseError):
        await aclient.process.start(sandbox_id, "true", tag="nap")
    await aclient.process.kill(sandbox_id, "nap", 9)
    assert (await sleeper.wait(10)).signal == 9
    with pytest.raises(ProcessNotFoundError):
        await aclient.process.connect(sandbox_id, "nobody")
