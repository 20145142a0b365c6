"""Every snippet of the SDK README, in both sync and async flavour, against a live server.

Self-contained snippets (Quick Start, Concurrent Usage, Timeout Handling) are taken from
sdk-python/README.md verbatim and run in a fresh interpreter, with only the server URL
substituted. Fragments that assume an existing ``client``/``sandbox_id`` are restated here
line by line, once per client flavour.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable
from subprocess import CompletedProcess
from typing import Any

import pytest

from workspace_sdk import (
    AgentNotConnectedError,
    AsyncWorkspaceClient,
    CommandNotFoundError,
    CreateSandboxParams,
    FileNotFoundError,
    PermissionDeniedError,
    ProcessTimeoutError,
    PtyNotFoundError,
    PtyOptions,
    RunCommandOptions,
    SandboxNotFoundError,
    TemplateNotFoundError,
    WorkspaceClient,
    WorkspaceError,
)

RunPython = Callable[..., CompletedProcess[str]]
TAIL_LOG = "/tmp/app.log"  # the seed's /var/log is on the template's read-only root filesystem


def run_readme_block(run_python: RunPython, source: str, server_url: str) -> str:
    code = source.replace("http://localhost:8080", server_url)
    result = run_python("-c", code)
    assert result.returncode == 0, f"snippet failed:\n{code}\n--- stderr:\n{result.stderr}"
    return result.stdout


# --- Quick Start ----------------------------------------------------------------------------


def test_quick_start_sync(run_python: RunPython, readme_block: Callable[..., str], server_url: str) -> None:
    output = run_readme_block(run_python, readme_block("### Synchronous Client"), server_url)
    assert "Created sandbox: sbx-" in output
    assert "Output: Hello World" in output


def test_quick_start_async(run_python: RunPython, readme_block: Callable[..., str], server_url: str) -> None:
    output = run_readme_block(run_python, readme_block("### Asynchronous Client"), server_url)
    assert "Created sandbox: sbx-" in output
    assert "Output: Hello World" in output


# --- Client Initialization ------------------------------------------------------------------


def test_client_initialization_sync(server_url: str) -> None:
    with WorkspaceClient(
        api_url=server_url,
        api_key="your-api-key",  # Optional (this test server has no key, so any is accepted)
        timeout=60.0,  # Request timeout in seconds
    ) as client:
        assert isinstance(client.sandbox.list(), list)
    assert client.closed


async def test_client_initialization_async(server_url: str) -> None:
    async with AsyncWorkspaceClient(
        api_url=server_url,
        api_key="your-api-key",
        timeout=60.0,
    ) as client:
        assert isinstance(await client.sandbox.list(), list)
    assert client.closed


# --- Sandbox Service ------------------------------------------------------------------------


def test_sandbox_service_sync(client: WorkspaceClient) -> None:
    sandbox = client.sandbox.create(
        CreateSandboxParams(
            template="workspace-test:latest",
            name="my-sandbox",
            env={"APP_ENV": "development"},
            metadata={"project": "demo"},
            timeout=3600,  # seconds
        )
    )
    try:
        assert (sandbox.state, sandbox.name, sandbox.timeout) == ("running", "my-sandbox", 3600)
        assert sandbox.env == {"APP_ENV": "development"}
        assert sandbox.metadata == {"project": "demo"}
        env = client.process.run(sandbox.id, "printenv", RunCommandOptions(args=["APP_ENV"]))
        assert env.stdout.strip() == "development"

        fetched = client.sandbox.get(sandbox.id)
        assert (fetched.id, fetched.name, fetched.template) == (sandbox.id, "my-sandbox", "workspace-test:latest")
        sandboxes = client.sandbox.list()
        assert sandbox.id in {s.id for s in sandboxes}
        sandboxes = client.sandbox.list(state="running")
        assert sandbox.id in {s.id for s in sandboxes}
        assert all(s.state == "running" for s in sandboxes)
        assert sandbox.id not in {s.id for s in client.sandbox.list(state="stopped")}
        assert client.sandbox.exists(sandbox.id) is True
        assert client.sandbox.wait_for_state(sandbox.id, "running").state == "running"
    finally:
        client.sandbox.delete(sandbox.id, force=True)
    assert client.sandbox.exists(sandbox.id) is False


async def test_sandbox_service_async(aclient: AsyncWorkspaceClient) -> None:
    client = aclient
    sandbox = await client.sandbox.create(
        CreateSandboxParams(
            template="workspace-test:latest",
            name="my-sandbox",
            env={"APP_ENV": "development"},
            metadata={"project": "demo"},
            timeout=3600,
        )
    )
    try:
        assert (sandbox.state, sandbox.name, sandbox.timeout) == ("running", "my-sandbox", 3600)
        assert (await client.sandbox.get(sandbox.id)).id == sandbox.id
        assert sandbox.id in {s.id for s in await client.sandbox.list()}
        running = await client.sandbox.list(state="running")
        assert sandbox.id in {s.id for s in running}
        assert await client.sandbox.exists(sandbox.id) is True
        assert (await client.sandbox.wait_for_state(sandbox.id, "running")).state == "running"
    finally:
        await client.sandbox.delete(sandbox.id, force=True)
    assert await client.sandbox.exists(sandbox.id) is False


def test_sandbox_delete_without_force(client: WorkspaceClient) -> None:
    sandbox = client.sandbox.create(CreateSandboxParams(template="workspace-test:latest"))
    client.sandbox.delete(sandbox.id)
    with pytest.raises(SandboxNotFoundError):
        client.sandbox.get(sandbox.id)


# --- Process Service ------------------------------------------------------------------------


def test_process_service_sync(client: WorkspaceClient, sandbox_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    client.filesystem.write_string(sandbox_id, "/workspace/listed.txt", "x")
    result = client.process.run(
        sandbox_id,
        "ls",
        RunCommandOptions(
            args=["-la", "/workspace"],
            env={"LC_ALL": "C"},
            cwd="/workspace",
            timeout=30,
        ),
    )
    print(f"Exit code: {result.exit_code}")
    print(f"Stdout: {result.stdout}")
    print(f"Stderr: {result.stderr}")
    assert result.exit_code == 0
    assert "listed.txt" in result.stdout

    # Stream command output (sync). The seed follows /var/log/app.log; the test template's
    # root filesystem is read-only, so the log lives in /tmp. The file is written first and
    # the tail is stopped through the stream's pid once its first line arrived.
    client.filesystem.write_string(sandbox_id, TAIL_LOG, "first line\n")
    stream = client.process.run_stream(sandbox_id, "tail", RunCommandOptions(args=["-f", TAIL_LOG]))
    exit_code = None
    for event in stream:
        if event.type == "stdout":
            print(event.data, end="")
            client.process.kill(sandbox_id, stream.pid, signal=15)  # SIGTERM
        elif event.type == "stderr":
            print(event.data, end="", file=sys.stderr)
        elif event.type == "exit":
            print(f"\nExited with code: {event.code}")
            exit_code = event.code
            break
    assert exit_code == 128 + 15
    assert "first line" in capsys.readouterr().out
    assert stream.closed


async def test_process_service_async(aclient: AsyncWorkspaceClient, sandbox_id: str) -> None:
    client = aclient
    result = await client.process.run(
        sandbox_id,
        "ls",
        RunCommandOptions(args=["-la", "/workspace"], env={"LC_ALL": "C"}, cwd="/workspace", timeout=30),
    )
    assert result.exit_code == 0
    assert result.stdout.startswith("total")

    await client.filesystem.write_string(sandbox_id, TAIL_LOG, "first line\n")
    # Stream command output (async): break as soon as the exit event arrives.
    stream = client.process.run_stream(sandbox_id, "tail", RunCommandOptions(args=["-f", TAIL_LOG]))
    seen = ""
    async for event in stream:
        if event.type == "stdout":
            seen += event.data
            await client.process.kill(sandbox_id, stream.pid, signal=15)
        elif event.type == "exit":
            break
    assert seen == "first line\n"


def test_process_kill_unknown_pid(client: WorkspaceClient, sandbox_id: str) -> None:
    from workspace_sdk import ProcessNotFoundError

    with pytest.raises(ProcessNotFoundError):
        client.process.kill(sandbox_id, 999_999, signal=15)


# --- PTY Service ----------------------------------------------------------------------------


async def test_pty_service_async(server_url: str, sandbox_id: str) -> None:
    received = bytearray()
    async with AsyncWorkspaceClient(server_url) as client:
        # Create and connect to PTY
        pty = await client.pty.connect(
            sandbox_id,
            PtyOptions(
                cols=120,
                rows=40,
                shell="/bin/bash",
            ),
        )

        # Register data callback
        def on_data(data: bytes) -> None:
            received.extend(data)
            print(data.decode(errors="replace"), end="")

        pty.on_data(on_data)

        # Write to PTY
        await pty.write("ls -la\n")
        await wait_for(lambda: b"total" in received)

        # Resize PTY
        await pty.resize(100, 50)
        await pty.write("stty size\n")
        await wait_for(lambda: b"50 100" in received)

        # Kill PTY
        await pty.kill()
        assert await pty.wait(timeout=10) is not None
    assert pty.closed


def test_pty_service_sync(client: WorkspaceClient, sandbox_id: str) -> None:
    received = bytearray()
    pty = client.pty.connect(sandbox_id, PtyOptions(cols=120, rows=40, shell="/bin/bash"))
    with pty:
        pty.on_data(received.extend)
        pty.write("ls -la\n")
        wait_for_sync(lambda: b"total" in received)
        pty.resize(100, 50)
        pty.write("stty size\n")
        wait_for_sync(lambda: b"50 100" in received)
        pty.kill()
        assert pty.wait(timeout=10) is not None
    assert pty.closed


# --- FileSystem Service ---------------------------------------------------------------------


def test_filesystem_service_sync(client: WorkspaceClient, sandbox_id: str, capsys: pytest.CaptureFixture[str]) -> None:
    client.filesystem.write_string(sandbox_id, "/workspace/config.json", '{"debug": true}')
    client.filesystem.write_string(sandbox_id, "/workspace/README.md", "# Hello\n")
    client.filesystem.write_string(sandbox_id, "/workspace/file.txt", "file")
    client.filesystem.write_string(sandbox_id, "/workspace/temp.txt", "temp")
    client.filesystem.write_string(sandbox_id, "/workspace/old_dir/nested/x.txt", "x")
    client.filesystem.write_string(sandbox_id, "/workspace/old.txt", "old")
    client.filesystem.write_string(sandbox_id, "/workspace/src.txt", "src")

    # Read file as bytes
    content = client.filesystem.read(sandbox_id, "/workspace/config.json")
    assert content == b'{"debug": true}'
    # Read file as string
    text = client.filesystem.read_string(sandbox_id, "/workspace/README.md")
    assert text == "# Hello\n"
    # Write file from bytes
    client.filesystem.write(sandbox_id, "/workspace/data.bin", b"\x00\x01\x02")
    assert client.filesystem.read(sandbox_id, "/workspace/data.bin") == b"\x00\x01\x02"
    # Write file from string
    client.filesystem.write_string(sandbox_id, "/workspace/hello.txt", "Hello, World!")
    # Create directory
    client.filesystem.mkdir(sandbox_id, "/workspace/src/components", recursive=True)
    # List directory
    files = client.filesystem.list(sandbox_id, "/workspace")
    for f in files:
        print(f"{f.type:10} {f.size:8} {f.name}")
    names = {f.name: f for f in files}
    assert names["hello.txt"].size == 13 and names["hello.txt"].type == "file"
    assert names["src"].type == "directory"
    assert "hello.txt" in capsys.readouterr().out
    # Get file info
    info = client.filesystem.stat(sandbox_id, "/workspace/file.txt")
    assert (info.name, info.path, info.type, info.size) == ("file.txt", "/workspace/file.txt", "file", 4)
    # Check if exists
    assert client.filesystem.exists(sandbox_id, "/workspace/file.txt") is True
    # Remove file
    client.filesystem.remove(sandbox_id, "/workspace/temp.txt")
    assert client.filesystem.exists(sandbox_id, "/workspace/temp.txt") is False
    # Remove directory recursively
    client.filesystem.remove(sandbox_id, "/workspace/old_dir", recursive=True)
    assert client.filesystem.exists(sandbox_id, "/workspace/old_dir") is False
    # Move/rename
    client.filesystem.move(sandbox_id, "/workspace/old.txt", "/workspace/new.txt")
    assert client.filesystem.read_string(sandbox_id, "/workspace/new.txt") == "old"
    assert not client.filesystem.exists(sandbox_id, "/workspace/old.txt")
    # Copy
    client.filesystem.copy(sandbox_id, "/workspace/src.txt", "/workspace/dst.txt")
    assert client.filesystem.read_string(sandbox_id, "/workspace/dst.txt") == "src"
    assert client.filesystem.exists(sandbox_id, "/workspace/src.txt")


async def test_filesystem_service_async(aclient: AsyncWorkspaceClient, sandbox_id: str) -> None:
    fs = aclient.filesystem
    await fs.write_string(sandbox_id, "/workspace/config.json", '{"debug": true}')
    await fs.write_string(sandbox_id, "/workspace/temp.txt", "temp")
    await fs.write_string(sandbox_id, "/workspace/old_dir/nested/x.txt", "x")
    await fs.write_string(sandbox_id, "/workspace/old.txt", "old")
    await fs.write_string(sandbox_id, "/workspace/src.txt", "src")

    assert await fs.read(sandbox_id, "/workspace/config.json") == b'{"debug": true}'
    assert await fs.read_string(sandbox_id, "/workspace/config.json") == '{"debug": true}'
    await fs.write(sandbox_id, "/workspace/data.bin", b"\x00\x01\x02")
    await fs.write_string(sandbox_id, "/workspace/hello.txt", "Hello, World!")
    created = await fs.mkdir(sandbox_id, "/workspace/src/components", recursive=True)
    assert created.type == "directory"
    files = await fs.list(sandbox_id, "/workspace")
    assert {"config.json", "data.bin", "hello.txt", "src"} <= {f.name for f in files}
    info = await fs.stat(sandbox_id, "/workspace/hello.txt")
    assert (info.type, info.size) == ("file", 13)
    assert await fs.exists(sandbox_id, "/workspace/hello.txt") is True
    await fs.remove(sandbox_id, "/workspace/temp.txt")
    await fs.remove(sandbox_id, "/workspace/old_dir", recursive=True)
    assert not await fs.exists(sandbox_id, "/workspace/old_dir")
    await fs.move(sandbox_id, "/workspace/old.txt", "/workspace/new.txt")
    await fs.copy(sandbox_id, "/workspace/src.txt", "/workspace/dst.txt")
    assert await fs.read_string(sandbox_id, "/workspace/new.txt") == "old"
    assert await fs.read_string(sandbox_id, "/workspace/dst.txt") == "src"


# --- Error Handling -------------------------------------------------------------------------


def test_error_handling_sync(client: WorkspaceClient, sandbox_id: str) -> None:
    caught: list[str] = []
    try:
        client.sandbox.get("invalid-id")
    except SandboxNotFoundError as e:
        caught.append(f"Sandbox not found: {e.sandbox_id}")
    except WorkspaceError as e:
        caught.append(f"API error [{e.code}]: {e.message}")
    assert caught == ["Sandbox not found: invalid-id"]

    # Process errors
    try:
        client.process.run(sandbox_id, "invalid-command")
    except ProcessTimeoutError:
        caught.append("Command timed out")
    except WorkspaceError as e:
        caught.append(f"Error: {e}")
        assert isinstance(e, CommandNotFoundError)
        assert e.code == "COMMAND_NOT_FOUND"
    assert caught[-1].startswith("Error: [COMMAND_NOT_FOUND]")


async def test_error_handling_async(aclient: AsyncWorkspaceClient, sandbox_id: str) -> None:
    with pytest.raises(SandboxNotFoundError) as not_found:
        await aclient.sandbox.get("invalid-id")
    assert not_found.value.sandbox_id == "invalid-id"
    assert str(not_found.value).startswith("[SANDBOX_NOT_FOUND] ")
    with pytest.raises(CommandNotFoundError):
        await aclient.process.run(sandbox_id, "invalid-command")


@pytest.mark.parametrize("flavour", ["sync", "async"])
async def test_every_seed_exception_is_reachable(flavour: str, server_url: str, sandbox_id: str) -> None:
    """The seed's error classes, each provoked for real (AgentNotConnectedError excepted: a
    healthy test server has no disconnected agent to report)."""

    async def call(result: Any) -> Any:
        return await result if asyncio.iscoroutine(result) else result

    client: Any = AsyncWorkspaceClient(server_url) if flavour == "async" else WorkspaceClient(server_url)
    try:
        with pytest.raises(TemplateNotFoundError) as template:
            await call(client.sandbox.create(CreateSandboxParams(template="no-such-template:0")))
        assert template.value.template == "no-such-template:0"
        with pytest.raises(FileNotFoundError) as missing:
            await call(client.filesystem.read(sandbox_id, "/workspace/nope.txt"))
        assert missing.value.path == "/workspace/nope.txt"
        with pytest.raises(PermissionDeniedError):
            await call(client.filesystem.write_string(sandbox_id, "/usr/bin/not-allowed", "x"))
        with pytest.raises(ProcessTimeoutError):
            await call(client.process.run(sandbox_id, "sleep", RunCommandOptions(args=["10"], timeout=1)))
        with pytest.raises(PtyNotFoundError) as pty:
            await call(client.pty.attach(sandbox_id, "pty-does-not-exist"))
        assert pty.value.pty_id == "pty-does-not-exist"
        assert issubclass(AgentNotConnectedError, WorkspaceError)
    finally:
        await call(client.aclose() if flavour == "async" else client.close())


# --- Sandbox Lifecycle ----------------------------------------------------------------------


def test_lifecycle_snippet(run_python: RunPython, readme_block: Callable[..., str], server_url: str) -> None:
    output = run_readme_block(run_python, readme_block("### Sandbox Lifecycle"), server_url)
    assert re.fullmatch(r"Forked: sbx-[0-9a-f]+ kept\n", output), output


# --- Concurrent Usage -----------------------------------------------------------------------


def test_concurrent_threads_snippet(run_python: RunPython, readme_block: Callable[..., str], server_url: str) -> None:
    output = run_readme_block(run_python, readme_block("### Sync Client with Threading"), server_url)
    # Threads' print() calls may interleave their text and newlines, so match the pieces.
    assert sorted(re.findall(r"Worker \d: Worker \d", output)) == [f"Worker {i}: Worker {i}" for i in range(5)]


def test_concurrent_asyncio_snippet(run_python: RunPython, readme_block: Callable[..., str], server_url: str) -> None:
    output = run_readme_block(run_python, readme_block("### Async Client with asyncio"), server_url)
    assert sorted(output.splitlines()) == [f"Worker {i}: Worker {i}" for i in range(5)]


# --- Timeout Handling -----------------------------------------------------------------------


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the snippet uses asyncio.timeout (3.11+)")
def test_timeout_handling_snippet_async(
    run_python: RunPython, readme_block: Callable[..., str], server_url: str
) -> None:
    output = run_readme_block(run_python, readme_block("## Timeout Handling"), server_url)
    assert "Command timed out: [PROCESS_TIMEOUT]" in output
    assert "Operation timed out" in output


def test_timeout_handling_sync(server_url: str) -> None:
    with WorkspaceClient(server_url, timeout=60.0) as client:
        sandbox = client.sandbox.create()
        try:
            # Command-level timeout
            with pytest.raises(ProcessTimeoutError) as timed_out:
                client.process.run(sandbox.id, "sleep", RunCommandOptions(args=["10"], timeout=5))
            assert timed_out.value.timeout == 5
            # The sync client has no asyncio.timeout; a short client timeout bounds the request.
            with WorkspaceClient(server_url, timeout=1.0) as impatient, pytest.raises(TimeoutError):
                impatient.process.run(sandbox.id, "sleep", RunCommandOptions(args=["60"]))
            assert client.process.run(sandbox.id, "true").exit_code == 0
        finally:
            client.sandbox.delete(sandbox.id, force=True)


async def wait_for(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def wait_for_sync(predicate: Callable[[], bool], timeout: float = 15.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
