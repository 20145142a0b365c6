"""The real `e2b` SDK's AsyncSandbox, unchanged, against a live Workspace server."""

from __future__ import annotations

import asyncio

import pytest
from e2b import AsyncSandbox, CommandExitException, FilesystemEvent, NotFoundException

from tests.support.live_server import LiveServer


async def test_e2b_async_sandbox_commands_files_and_kill(e2b_server: LiveServer) -> None:
    sandbox = await AsyncSandbox.create(timeout=120)
    try:
        out: list[str] = []
        result = await sandbox.commands.run("echo one; echo two", on_stdout=out.append)
        assert result.stdout == "one\ntwo\n" and "".join(out) == "one\ntwo\n"
        with pytest.raises(CommandExitException) as caught:
            await sandbox.commands.run("exit 7")
        assert caught.value.exit_code == 7
        handle = await sandbox.commands.run("sleep 120", background=True)
        assert handle.pid in [p.pid for p in await sandbox.commands.list()]
        assert await sandbox.commands.kill(handle.pid) is True
        await sandbox.files.write("/workspace/async.txt", "async\n")
        assert await sandbox.files.read("/workspace/async.txt") == "async\n"
        assert await sandbox.files.exists("/workspace/async.txt")
        assert [e.name for e in await sandbox.files.list("/workspace") if e.name == "async.txt"] == ["async.txt"]
        await sandbox.set_timeout(200)
        info = await sandbox.get_info()
        assert info.sandbox_id == sandbox.sandbox_id
        connected = await AsyncSandbox.connect(sandbox.sandbox_id)
        assert (await connected.files.read("/workspace/async.txt")) == "async\n"
    finally:
        assert await sandbox.kill() is True
    with pytest.raises(NotFoundException):
        await AsyncSandbox.connect(sandbox.sandbox_id)


async def test_e2b_async_watch_dir_streams_events(e2b_server: LiveServer) -> None:
    sandbox = await AsyncSandbox.create(timeout=120)
    try:
        events: list[tuple[str, str]] = []
        got = asyncio.Event()

        def on_event(event: FilesystemEvent) -> None:
            events.append((event.name, event.type.value))
            if event.name == "streamed.txt":
                got.set()

        handle = await sandbox.files.watch_dir("/workspace", on_event)
        await sandbox.files.write("/workspace/streamed.txt", "y")
        await asyncio.wait_for(got.wait(), 30)
        await handle.stop()
        assert ("streamed.txt", "create") in events
    finally:
        await sandbox.kill()


def test_e2b_server_logged_no_unhandled_error(e2b_server: LiveServer) -> None:
    """Runs last in the module: nothing above made the server log a traceback (a 500)."""
    assert "Traceback" not in e2b_server.log()
