"""ProcessHandle and FileWatch against a mocked server, for both flavours: offsets, the
resume after a broken connection, wait, stdin, and the watch's errors."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from workspace_sdk import (
    DroppedEvent,
    ExitEvent,
    FileNotFoundError,
    FileWatchEvent,
    ProcessNotFoundError,
    RunCommandOptions,
    StdinClosedError,
    StdoutEvent,
    WaitTimeoutError,
)

INFO: dict[str, Any] = {
    "pid": 42,
    "tag": "web",
    "command": "server",
    "args": [],
    "pty": False,
    "background": True,
    "state": "running",
    "stdin": True,
    "output_start": 0,
    "output_end": 0,
}


class Broken(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A body that breaks off after its chunks, like a server killed mid-stream."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def __iter__(self) -> Any:
        yield from self.chunks
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    async def __aiter__(self) -> Any:
        for chunk in self.chunks:
            yield chunk
        raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")


async def test_following_resumes_at_the_last_offset_after_a_broken_connection(driver: Any, wire: Any) -> None:
    offsets: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/output"):
            offset = request.url.params["offset"]
            offsets.append(offset)
            if offset == "0":
                return httpx.Response(
                    200,
                    stream=Broken(
                        [
                            wire.sse("start", {"pid": 42, "tag": "web", "offset": 0, "dropped": 0}),
                            wire.sse("stdout", {"data": "hello ", "offset": 0, "end": 6}),
                        ]
                    ),
                )
            body = wire.sse("start", {"pid": 42, "tag": "web", "offset": 6, "dropped": 0}) + wire.sse(
                "stdout", {"data": "world", "offset": 6, "end": 11}
            )
            body += wire.sse("exit", {"code": 0, "signal": None, "finished_at": "t", "timed_out": False, "end": 11})
            return httpx.Response(200, content=body)
        return httpx.Response(200, json=INFO)

    client = driver.client(handler)
    handle = await driver.call(client.process.connect("sbx-1", "web"))
    events = await driver.collect(handle)
    assert offsets == ["0", "6"]
    assert events == [
        StdoutEvent(data="hello ", offset=0, end=6),
        StdoutEvent(data="world", offset=6, end=11),
        ExitEvent(code=0, finished_at="t", end=11),
    ]
    assert (handle.offset, handle.exit_code) == (11, 0)


async def test_a_replay_that_begins_later_says_what_was_dropped(driver: Any, wire: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/output"):
            body = wire.sse("start", {"pid": 42, "tag": None, "offset": 100, "dropped": 100})
            body += wire.sse("exit", {"code": 3, "signal": None, "finished_at": "t", "timed_out": False, "end": 100})
            return httpx.Response(200, content=body)
        return httpx.Response(200, json=INFO)

    client = driver.client(handler)
    handle = await driver.call(client.process.connect("sbx-1", 42))
    events = await driver.collect(handle)
    assert events[0] == DroppedEvent(offset=0, end=100)
    assert events[1].code == 3


async def test_errors_that_are_not_transient_raise(driver: Any, wire: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stdin"):
            return wire.error(409, "STDIN_CLOSED", "closed", pid=42, reason="closed")
        return wire.error(404, "PROCESS_NOT_FOUND", "no process with tag 'x'", tag="x")

    client = driver.client(handler)
    with pytest.raises(ProcessNotFoundError) as missing:
        await driver.call(client.process.connect("sbx-1", "x"))
    assert missing.value.tag == "x"
    with pytest.raises(StdinClosedError) as closed:
        await driver.call(client.process.send_stdin("sbx-1", 42, "data"))
    assert closed.value.reason == "closed"


async def test_wait_polls_until_the_exit_or_times_out(driver: Any) -> None:
    answers = [dict(INFO), dict(INFO, state="exited", exit_code=143, signal=15, finished_at="t", output_end=5)]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/wait"):
            return httpx.Response(200, json=answers.pop(0) if len(answers) > 1 else answers[0])
        return httpx.Response(200, json=INFO)

    client = driver.client(handler)
    handle = await driver.call(client.process.connect("sbx-1", 42))
    exited = await driver.call(handle.wait())
    assert (exited.code, exited.signal, exited.end) == (143, 15, 5)

    still = driver.client(lambda request: httpx.Response(200, json=INFO))
    running = await driver.call(still.process.connect("sbx-1", 42))
    with pytest.raises(WaitTimeoutError):
        await driver.call(running.wait(timeout=0))


async def test_start_sends_the_options_and_text_stdin(driver: Any) -> None:
    seen: list[tuple[str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.read()))
        if request.url.path.endswith("/processes"):
            return httpx.Response(201, json=INFO)
        return httpx.Response(204)

    client = driver.client(handler)
    handle = await driver.call(
        client.process.start("sbx-1", "server", RunCommandOptions(stdin="input"), tag="web", log_bytes=65536)
    )
    assert (handle.pid, handle.tag) == (42, "web")
    paths = [path for path, _ in seen]
    assert paths == [
        "/api/v1/sandboxes/sbx-1/processes",
        "/api/v1/sandboxes/sbx-1/processes/42/stdin",
        "/api/v1/sandboxes/sbx-1/processes/42/stdin/close",
    ]
    body = json.loads(seen[0][1])
    assert (body["tag"], body["stdin"], body["log_bytes"]) == ("web", True, 65536)
    assert seen[1][1].decode() == "input"


async def test_watch_yields_changes_and_raises_its_errors(driver: Any, wire: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params["path"] == "/missing":
            return wire.error(404, "FILE_NOT_FOUND", "/missing: no such file", path="/missing")
        body = wire.sse("ready", {"path": "/w"}) + wire.sse("create", {"path": "/w/a", "is_dir": False})
        body += wire.sse("rename", {"path": "/w/a", "is_dir": False, "new_path": "/w/b"})
        body += wire.sse("overflow", {"message": "lost"})
        body += wire.sse("error", {"code": "FILE_NOT_FOUND", "message": "the watched path /w was removed"})
        return httpx.Response(200, content=body)

    client = driver.client(handler)
    seen: list[FileWatchEvent] = []
    watch = client.filesystem.watch("sbx-1", "/w")
    await driver.enter(watch)
    with pytest.raises(FileNotFoundError):
        await driver.collect(watch, into=seen)
    assert seen == [
        FileWatchEvent(type="create", path="/w/a"),
        FileWatchEvent(type="rename", path="/w/a", new_path="/w/b"),
        FileWatchEvent(type="overflow", path=None, message="lost"),
    ]
    assert watch.closed
    with pytest.raises(FileNotFoundError):
        await driver.enter(client.filesystem.watch("sbx-1", "/missing"))
