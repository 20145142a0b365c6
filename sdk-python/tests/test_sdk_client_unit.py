"""Client behaviour against a mocked server (httpx.MockTransport), for both flavours.

Every test takes the ``driver`` fixture and so runs once with ``WorkspaceClient`` and once
with ``AsyncWorkspaceClient``.
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from workspace_sdk import (
    CommandNotFoundError,
    CreateSandboxParams,
    ErrorEvent,
    ExitEvent,
    FileNotFoundError,
    ProcessTimeoutError,
    RequestTimeoutError,
    RunCommandOptions,
    Sandbox,
    SandboxNotFoundError,
    StderrEvent,
    StdoutEvent,
    TemplateNotFoundError,
    WaitTimeoutError,
    WorkspaceConnectionError,
    WorkspaceError,
)


def body(request: httpx.Request) -> Any:
    return json.loads(request.content)


def read_body(request: httpx.Request) -> bytes:
    # Streamed request bodies (iterators) must be read through the request stream.
    if isinstance(request.stream, httpx.SyncByteStream):
        return b"".join(request.stream)
    return request.read()


# --- sandboxes ------------------------------------------------------------------------------


async def test_create_sends_only_set_fields_and_parses_sandbox(driver: Any, wire: Any) -> None:
    client = driver.client(lambda r: httpx.Response(201, json=wire.sandbox_json))
    sandbox = await driver.call(
        client.sandbox.create(
            CreateSandboxParams(
                template="workspace-test:latest",
                env={"A": "1"},
                timeout=60,
                memory_mb=256,
                network=False,
            )
        )
    )
    request = driver.requests[-1]
    assert (request.method, request.url.path) == ("POST", "/api/v1/sandboxes")
    assert body(request) == {
        "template": "workspace-test:latest",
        "env": {"A": "1"},
        "timeout": 60,
        "memory_mb": 256,
        "network": False,
    }
    assert sandbox == Sandbox(**wire.sandbox_json)


async def test_create_without_params_sends_empty_object(driver: Any, wire: Any) -> None:
    client = driver.client(lambda r: httpx.Response(201, json=wire.sandbox_json))
    await driver.call(client.sandbox.create())
    assert body(driver.requests[-1]) == {}


async def test_unknown_template(driver: Any, wire: Any) -> None:
    client = driver.client(lambda r: wire.error(404, "TEMPLATE_NOT_FOUND", "template nope not found"))
    with pytest.raises(TemplateNotFoundError) as caught:
        await driver.call(client.sandbox.create(CreateSandboxParams(template="nope")))
    assert caught.value.template == "nope"  # filled in from the request when details omit it


async def test_get_list_exists_delete(driver: Any, wire: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "DELETE":
            return httpx.Response(204)
        if path == "/api/v1/sandboxes":
            return httpx.Response(200, json={"sandboxes": [wire.sandbox_json]})
        if path == "/api/v1/sandboxes/sbx-1":
            return httpx.Response(200, json=wire.sandbox_json)
        not_found: httpx.Response = wire.error(404, "SANDBOX_NOT_FOUND", "sandbox gone not found", sandbox_id="gone")
        return not_found

    client = driver.client(handler)
    assert (await driver.call(client.sandbox.get("sbx-1"))).id == "sbx-1"
    assert [s.id for s in await driver.call(client.sandbox.list())] == ["sbx-1"]
    await driver.call(client.sandbox.list(state="running"))
    assert driver.requests[-1].url.params["state"] == "running"
    assert await driver.call(client.sandbox.exists("sbx-1")) is True
    assert await driver.call(client.sandbox.exists("gone")) is False
    await driver.call(client.sandbox.delete("sbx-1", force=True))
    assert driver.requests[-1].url.params["force"] == "true"
    await driver.call(client.sandbox.delete("sbx-1"))
    assert driver.requests[-1].url.params["force"] == "false"
    with pytest.raises(SandboxNotFoundError) as caught:
        await driver.call(client.sandbox.get("gone"))
    assert caught.value.sandbox_id == "gone"
    assert str(caught.value) == "[SANDBOX_NOT_FOUND] sandbox gone not found"


async def test_ids_are_path_quoted(driver: Any, wire: Any) -> None:
    client = driver.client(lambda r: httpx.Response(200, json=wire.sandbox_json))
    await driver.call(client.sandbox.get("a/b c"))
    assert driver.requests[-1].url.raw_path == b"/api/v1/sandboxes/a%2Fb%20c"


async def test_wait_for_state_polls_until_reached(driver: Any, wire: Any) -> None:
    states = iter(["starting", "starting", "running"])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={**wire.sandbox_json, "state": next(states)})

    client = driver.client(handler)
    sandbox = await driver.call(client.sandbox.wait_for_state("sbx-1", "running", poll_interval=0.01))
    assert sandbox.state == "running"
    assert len(driver.requests) == 3


async def test_wait_for_state_times_out(driver: Any, wire: Any) -> None:
    client = driver.client(lambda r: httpx.Response(200, json={**wire.sandbox_json, "state": "starting"}))
    with pytest.raises(WaitTimeoutError) as caught:
        await driver.call(client.sandbox.wait_for_state("sbx-1", "running", timeout=0.05, poll_interval=0.01))
    assert isinstance(caught.value, TimeoutError)
    assert caught.value.details["state"] == "starting"


async def test_wait_for_state_fails_fast_on_error_state(driver: Any, wire: Any) -> None:
    client = driver.client(
        lambda r: httpx.Response(200, json={**wire.sandbox_json, "state": "error", "error_message": "agent crashed"})
    )
    with pytest.raises(WorkspaceError, match="agent crashed") as caught:
        await driver.call(client.sandbox.wait_for_state("sbx-1", "running"))
    assert caught.value.code == "SANDBOX_FAILED"


async def test_templates(driver: Any) -> None:
    client = driver.client(
        lambda r: httpx.Response(200, json={"templates": [{"name": "workspace-test:latest", "description": "default"}]})
    )
    templates = await driver.call(client.template.list())
    assert [(t.name, t.description) for t in templates] == [("workspace-test:latest", "default")]


# --- processes ------------------------------------------------------------------------------


async def test_run_body_and_result(driver: Any) -> None:
    client = driver.client(
        lambda r: httpx.Response(200, json={"exit_code": 0, "stdout": "Hello World\n", "stderr": "", "pid": 7})
    )
    result = await driver.call(
        client.process.run(
            "sbx-1",
            "echo",
            RunCommandOptions(
                args=["Hello", "World"],
                env={"LC_ALL": "C"},
                cwd="/workspace",
                stdin="in",
                user="root",
            ),
        )
    )
    request = driver.requests[-1]
    assert request.url.path == "/api/v1/sandboxes/sbx-1/processes/run"
    assert body(request) == {
        "command": "echo",
        "args": ["Hello", "World"],
        "env": {"LC_ALL": "C"},
        "cwd": "/workspace",
        "timeout": None,
        "user": "root",
        "stdin": "in",
    }
    assert (result.exit_code, result.stdout, result.stderr, result.pid) == (
        0,
        "Hello World\n",
        "",
        7,
    )


async def test_run_defaults(driver: Any) -> None:
    client = driver.client(lambda r: httpx.Response(200, json={"exit_code": 3, "stdout": "", "stderr": "x"}))
    result = await driver.call(client.process.run("sbx-1", "false"))
    assert body(driver.requests[-1]) == {
        "command": "false",
        "args": [],
        "env": {},
        "cwd": None,
        "timeout": None,
        "user": None,
        "stdin": None,
    }
    assert result.exit_code == 3  # a failing command is a result, not an exception
    assert result.pid is None


async def test_run_extends_read_timeout_past_command_timeout(driver: Any) -> None:
    client = driver.client(
        lambda r: httpx.Response(200, json={"exit_code": 0, "stdout": "", "stderr": ""}),
        timeout=5.0,
    )
    await driver.call(client.process.run("sbx-1", "sleep", RunCommandOptions(args=["100"], timeout=100)))
    timeouts = driver.requests[-1].extensions["timeout"]
    assert timeouts["read"] == 110.0
    assert timeouts["connect"] == 5.0

    await driver.call(client.process.run("sbx-1", "true"))
    assert driver.requests[-1].extensions["timeout"]["read"] == 5.0

    await driver.call(client.process.run("sbx-1", "true", RunCommandOptions(timeout=0.5)))
    assert driver.requests[-1].extensions["timeout"]["read"] == 10.5


async def test_run_errors(driver: Any, wire: Any) -> None:
    responses = iter(
        [
            wire.error(
                408,
                "PROCESS_TIMEOUT",
                "command timed out after 1s",
                timeout=1,
                stdout="partial",
                stderr="",
            ),
            wire.error(400, "COMMAND_NOT_FOUND", "command nope not found", command="nope"),
        ]
    )
    client = driver.client(lambda r: next(responses))
    with pytest.raises(ProcessTimeoutError) as timed_out:
        await driver.call(client.process.run("sbx-1", "sleep", RunCommandOptions(args=["5"], timeout=1)))
    assert timed_out.value.stdout == "partial"
    assert isinstance(timed_out.value, TimeoutError)
    with pytest.raises(CommandNotFoundError) as not_found:
        await driver.call(client.process.run("sbx-1", "nope"))
    assert not_found.value.command == "nope"


async def test_kill_and_list(driver: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(204)
        return httpx.Response(200, json={"processes": [{"pid": 5, "command": "sleep", "args": ["9"], "pty": False}]})

    client = driver.client(handler)
    await driver.call(client.process.kill("sbx-1", 5))
    assert driver.requests[-1].url.path == "/api/v1/sandboxes/sbx-1/processes/5/kill"
    assert body(driver.requests[-1]) == {"signal": 15}
    await driver.call(client.process.kill("sbx-1", 5, signal=9))
    assert body(driver.requests[-1]) == {"signal": 9}
    processes = await driver.call(client.process.list("sbx-1"))
    assert [(p.pid, p.command, p.args, p.pty) for p in processes] == [(5, "sleep", ["9"], False)]


def stream_chunks(wire: Any) -> list[bytes]:
    return [
        b": keepalive\n\n",
        wire.sse("start", {"pid": 42}),
        wire.sse("stdout", {"data": "out 1\n"}),
        b'event: stderr\ndata: {"data":',  # an event split across chunks
        b' "err"}\n\n',
        wire.sse("future-event", {"x": 1}),  # unknown event types are skipped
        wire.sse("exit", {"code": 0}),
    ]


async def test_run_stream_yields_events_and_exposes_pid(driver: Any, wire: Any) -> None:
    tracked = wire.TrackingStream(stream_chunks(wire))
    client = driver.client(lambda r: httpx.Response(200, stream=tracked, headers={"content-type": "text/event-stream"}))
    stream = client.process.run_stream("sbx-1", "sh", RunCommandOptions(args=["-c", "x"]))
    assert driver.requests == []  # lazy: nothing sent until entered or iterated
    with pytest.raises(RuntimeError, match="not started"):
        _ = stream.pid
    events = await driver.collect(stream)
    assert events == [StdoutEvent(data="out 1\n"), StderrEvent(data="err"), ExitEvent(code=0)]
    assert stream.pid == 42
    assert tracked.closed
    assert stream.closed
    request = driver.requests[-1]
    assert request.url.path == "/api/v1/sandboxes/sbx-1/processes/stream"
    assert body(request)["args"] == ["-c", "x"]


async def test_run_stream_context_manager_starts_it(driver: Any, wire: Any) -> None:
    tracked = wire.TrackingStream(stream_chunks(wire))
    client = driver.client(lambda r: httpx.Response(200, stream=tracked))
    stream = client.process.run_stream("sbx-1", "sh")
    entered = await driver.enter(stream)
    assert entered is stream
    assert stream.pid == 42
    first = await driver.collect(stream, limit=1)
    assert first == [StdoutEvent(data="out 1\n")]
    await driver.exit(stream)
    assert tracked.closed


async def test_run_stream_break_closes_the_response(driver: Any, wire: Any) -> None:
    def endless() -> Any:
        yield wire.sse("start", {"pid": 1})
        while True:
            yield wire.sse("stdout", {"data": "tick\n"})

    tracked = wire.TrackingStream(endless())
    client = driver.client(lambda r: httpx.Response(200, stream=tracked))
    events = await driver.collect(client.process.run_stream("sbx-1", "yes"), limit=2)
    assert len(events) == 2
    # Sync: the dropped generator is finalized immediately. Async: the event loop's
    # async-generator finalizer runs its cleanup on a following loop iteration.
    for _ in range(10):
        if tracked.closed:
            break
        gc.collect()
        await asyncio.sleep(0)
    assert tracked.closed


async def test_run_stream_error_event_is_last(driver: Any, wire: Any) -> None:
    chunks = [
        wire.sse("start", {"pid": 3}),
        wire.sse("stdout", {"data": "a"}),
        wire.sse("error", {"code": "PROCESS_TIMEOUT", "message": "timed out after 1s"}),
        wire.sse("stdout", {"data": "never seen"}),
    ]
    client = driver.client(lambda r: httpx.Response(200, stream=wire.TrackingStream(chunks)))
    events = await driver.collect(client.process.run_stream("sbx-1", "sleep"))
    assert events == [
        StdoutEvent(data="a"),
        ErrorEvent(message="timed out after 1s", code="PROCESS_TIMEOUT"),
    ]


async def test_run_stream_json_error_raises_on_start(driver: Any, wire: Any) -> None:
    client = driver.client(lambda r: wire.error(400, "COMMAND_NOT_FOUND", "command nope not found"))
    with pytest.raises(CommandNotFoundError):
        await driver.collect(client.process.run_stream("sbx-1", "nope"))
    stream = client.process.run_stream("sbx-1", "nope")
    with pytest.raises(CommandNotFoundError):
        await driver.enter(stream)
    assert stream.closed


async def test_run_stream_error_before_start_raises_mapped_exception(driver: Any, wire: Any) -> None:
    chunks = [wire.sse("error", {"code": "AGENT_NOT_CONNECTED", "message": "agent gone"})]
    client = driver.client(lambda r: httpx.Response(200, stream=wire.TrackingStream(chunks)))
    from workspace_sdk import AgentNotConnectedError

    with pytest.raises(AgentNotConnectedError) as caught:
        await driver.collect(client.process.run_stream("sbx-1", "ls"))
    assert caught.value.sandbox_id == "sbx-1"


async def test_run_stream_cut_short_raises_connection_error(driver: Any, wire: Any) -> None:
    chunks = [wire.sse("start", {"pid": 3}), wire.sse("stdout", {"data": "a"})]
    client = driver.client(lambda r: httpx.Response(200, stream=wire.TrackingStream(chunks)))
    seen: list[Any] = []
    with pytest.raises(WorkspaceConnectionError, match="without an exit event"):
        await driver.collect(client.process.run_stream("sbx-1", "ls"), into=seen)
    assert seen == [StdoutEvent(data="a")]


async def test_run_stream_uses_keepalive_tolerant_read_timeout(driver: Any, wire: Any) -> None:
    client = driver.client(lambda r: httpx.Response(200, stream=wire.TrackingStream(stream_chunks(wire))), timeout=5.0)
    await driver.collect(client.process.run_stream("sbx-1", "ls"))
    assert driver.requests[-1].extensions["timeout"]["read"] == 30.0


# --- files ----------------------------------------------------------------------------------


async def test_read_and_write(driver: Any, wire: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "PUT":
            return httpx.Response(200, json={**wire.file_info_json, "size": len(read_body(request))})
        return httpx.Response(200, content="héllo".encode())

    client = driver.client(handler)
    assert await driver.call(client.filesystem.read("sbx-1", "/workspace/a.txt")) == "héllo".encode()
    assert driver.requests[-1].url.params["path"] == "/workspace/a.txt"
    assert await driver.call(client.filesystem.read_string("sbx-1", "/workspace/a.txt")) == "héllo"
    info = await driver.call(client.filesystem.write("sbx-1", "/workspace/a.bin", b"\x00\x01\x02"))
    assert info.size == 3
    assert driver.requests[-1].method == "PUT"
    info = await driver.call(client.filesystem.write_string("sbx-1", "/workspace/h.txt", "Hello, World!"))
    assert info.size == 13


async def test_write_streams_file_objects_and_iterables(driver: Any, wire: Any) -> None:
    received: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        data = read_body(request)
        received.append(data)
        return httpx.Response(200, json={**wire.file_info_json, "size": len(data)})

    client = driver.client(handler)
    await driver.call(client.filesystem.write("sbx-1", "/w/a", io.BytesIO(b"from a file object")))
    await driver.call(client.filesystem.write("sbx-1", "/w/b", [b"chunk1-", b"chunk2"]))
    if driver.is_async:

        async def agen() -> Any:
            yield b"async-"
            yield b"chunks"

        await driver.call(client.filesystem.write("sbx-1", "/w/c", agen()))
        assert received[-1] == b"async-chunks"
    assert received[:2] == [b"from a file object", b"chunk1-chunk2"]
    assert "content-length" not in driver.requests[1].headers  # unknown length: chunked


async def test_upload_and_download_local_files(driver: Any, wire: Any, tmp_path: Path) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB
    stored: dict[str, bytes] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.params["path"]
        if request.method == "PUT":
            stored[path] = read_body(request)
            return httpx.Response(200, json={**wire.file_info_json, "size": len(stored[path])})
        if path not in stored:
            missing: httpx.Response = wire.error(404, "FILE_NOT_FOUND", f"{path} not found", path=path)
            return missing
        chunks = [stored[path][i : i + 100_000] for i in range(0, len(stored[path]), 100_000)]
        return httpx.Response(
            200,
            stream=wire.TrackingStream(chunks),
            headers={"Content-Length": str(len(stored[path]))},
        )

    client = driver.client(handler)
    source = tmp_path / "source.bin"
    source.write_bytes(payload)
    info = await driver.call(client.filesystem.upload("sbx-1", "/workspace/big.bin", source))
    assert info.size == len(payload)
    assert driver.requests[-1].headers["content-length"] == str(len(payload))

    target = tmp_path / "target.bin"
    written = await driver.call(client.filesystem.download("sbx-1", "/workspace/big.bin", target))
    assert written == len(payload)
    assert target.read_bytes() == payload

    buffer = io.BytesIO()
    await driver.call(client.filesystem.download("sbx-1", "/workspace/big.bin", buffer))
    assert buffer.getvalue() == payload

    stream = client.filesystem.read_stream("sbx-1", "/workspace/big.bin", chunk_size=65536)
    await driver.enter(stream)
    assert stream.size == len(payload)
    chunks = await driver.collect(stream)
    await driver.exit(stream)
    assert max(len(c) for c in chunks) <= 65536
    assert b"".join(chunks) == payload

    missing = tmp_path / "missing.bin"
    with pytest.raises(FileNotFoundError) as caught:
        await driver.call(client.filesystem.download("sbx-1", "/workspace/nope", missing))
    assert caught.value.path == "/workspace/nope"
    assert not missing.exists()  # no partial file left behind


async def test_file_metadata_operations(driver: Any, wire: Any) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path.endswith("/files/list"):
            return httpx.Response(200, json={"files": [wire.file_info_json, {**wire.file_info_json, "type": "other"}]})
        if path.endswith("/files/exists"):
            return httpx.Response(200, json={"exists": request.url.params["path"] == "/yes"})
        if request.method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(200, json=wire.file_info_json)

    client = driver.client(handler)
    files = await driver.call(client.filesystem.list("sbx-1", "/workspace"))
    assert [f.type for f in files] == ["file", "other"]
    assert files[0].mode == "0644"
    assert (await driver.call(client.filesystem.stat("sbx-1", "/workspace/a.txt"))).name == "a.txt"
    assert await driver.call(client.filesystem.exists("sbx-1", "/yes")) is True
    assert await driver.call(client.filesystem.exists("sbx-1", "/no")) is False
    await driver.call(client.filesystem.mkdir("sbx-1", "/workspace/src/c", recursive=True))
    assert body(driver.requests[-1]) == {"path": "/workspace/src/c", "recursive": True}
    await driver.call(client.filesystem.remove("sbx-1", "/workspace/old", recursive=True))
    assert driver.requests[-1].url.params["recursive"] == "true"
    await driver.call(client.filesystem.move("sbx-1", "/a", "/b"))
    assert body(driver.requests[-1]) == {"source": "/a", "destination": "/b"}
    await driver.call(client.filesystem.copy("sbx-1", "/a", "/c"))
    assert body(driver.requests[-1]) == {"source": "/a", "destination": "/c", "recursive": True}


# --- transport, auth, configuration ---------------------------------------------------------


async def test_auth_header_and_user_agent(driver: Any, wire: Any) -> None:
    client = driver.client(lambda r: httpx.Response(200, json=wire.sandbox_json), api_key="secret")
    await driver.call(client.sandbox.get("sbx-1"))
    headers = driver.requests[-1].headers
    assert headers["authorization"] == "Bearer secret"
    assert headers["user-agent"].startswith("workspace-sdk-python/")


async def test_no_auth_header_without_key(driver: Any, wire: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORKSPACE_API_KEY", raising=False)
    client = driver.client(lambda r: httpx.Response(200, json=wire.sandbox_json))
    await driver.call(client.sandbox.get("sbx-1"))
    assert "authorization" not in driver.requests[-1].headers


async def test_api_url_with_path_prefix(driver: Any, wire: Any) -> None:
    client = driver.client(
        lambda r: httpx.Response(200, json=wire.sandbox_json),
        api_url="https://proxy.test/workspace/",
    )
    await driver.call(client.sandbox.get("sbx-1"))
    assert str(driver.requests[-1].url) == "https://proxy.test/workspace/api/v1/sandboxes/sbx-1"


async def test_transport_failures_become_connection_errors(driver: Any) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    client = driver.client(refuse, api_url="http://127.0.0.1:9")
    with pytest.raises(WorkspaceConnectionError) as caught:
        await driver.call(client.sandbox.list())
    assert "http://127.0.0.1:9/api/v1/sandboxes" in str(caught.value)
    assert caught.value.code == "CONNECTION_ERROR"

    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    client = driver.client(slow)
    with pytest.raises(RequestTimeoutError):
        await driver.call(client.sandbox.list())
    with pytest.raises(TimeoutError):
        await driver.call(client.sandbox.list())


async def test_real_refused_connection_names_the_url(driver: Any) -> None:
    import socket

    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    from workspace_sdk import AsyncWorkspaceClient, WorkspaceClient

    url = f"http://127.0.0.1:{port}"
    client: Any = AsyncWorkspaceClient(url) if driver.is_async else WorkspaceClient(url)
    try:
        with pytest.raises(WorkspaceConnectionError, match=f"cannot connect to {url}"):
            await driver.call(client.sandbox.list())
    finally:
        await driver.close(client)


async def test_non_json_error_body(driver: Any) -> None:
    client = driver.client(lambda r: httpx.Response(502, text="<html>bad gateway</html>"))
    with pytest.raises(WorkspaceError) as caught:
        await driver.call(client.sandbox.list())
    assert caught.value.code == "HTTP_502"
    assert caught.value.status_code == 502


async def test_malformed_success_body(driver: Any) -> None:
    client = driver.client(lambda r: httpx.Response(200, json={"id": 1}))
    with pytest.raises(WorkspaceError) as caught:
        await driver.call(client.sandbox.get("sbx-1"))
    assert caught.value.code == "INVALID_RESPONSE"
    client = driver.client(lambda r: httpx.Response(200, text="not json"))
    with pytest.raises(WorkspaceError, match="non-JSON"):
        await driver.call(client.sandbox.get("sbx-1"))


async def test_closed_client_refuses_requests(driver: Any, wire: Any) -> None:
    client = driver.client(lambda r: httpx.Response(200, json=wire.sandbox_json))
    await driver.close(client)
    await driver.close(client)  # idempotent
    assert client.closed
    with pytest.raises(RuntimeError, match="closed"):
        await driver.call(client.sandbox.get("sbx-1"))


async def test_context_manager_closes_owned_pool(driver: Any) -> None:
    from workspace_sdk import AsyncWorkspaceClient, WorkspaceClient

    client: Any = AsyncWorkspaceClient("http://x.test") if driver.is_async else WorkspaceClient("http://x.test")
    entered = await driver.enter(client)
    assert entered is client
    await driver.exit(client)
    assert client.closed
    assert client._api._http.is_closed


async def test_caller_supplied_http_client_is_not_closed(driver: Any) -> None:
    client = driver.client(lambda r: httpx.Response(204))
    await driver.close(client)
    assert not client._api._http.is_closed


async def test_finished_or_closed_stream_iterates_as_empty(driver: Any, wire: Any) -> None:
    client = driver.client(lambda r: httpx.Response(200, stream=wire.TrackingStream(stream_chunks(wire))))
    stream = client.process.run_stream("sbx-1", "ls")
    assert len(await driver.collect(stream)) == 3
    assert await driver.collect(stream) == []  # already finished: nothing more, no error

    stream = client.process.run_stream("sbx-1", "ls")
    await driver.enter(stream)
    await driver.exit(stream)
    assert await driver.collect(stream) == []  # closed by the caller: ends quietly
    assert len(driver.requests) == 2
