"""File watching end to end: inotify inside the sandbox, events over SSE, sync and async."""

from __future__ import annotations

import time

import pytest

from workspace_sdk import (
    AsyncWorkspaceClient,
    FileNotFoundError,
    FileWatchEvent,
    RunCommandOptions,
    WorkspaceClient,
)


def sh(client: WorkspaceClient, sandbox_id: str, script: str) -> None:
    result = client.process.run(sandbox_id, "sh", RunCommandOptions(args=["-c", script]))
    assert result.exit_code == 0, result.stderr


def take(events: object, count: int) -> list[FileWatchEvent]:
    iterator = iter(events)  # type: ignore[call-overload]
    return [next(iterator) for _ in range(count)]


def test_each_kind_of_change_with_its_path(client: WorkspaceClient, sandbox_id: str) -> None:
    with client.filesystem.watch(sandbox_id, "/workspace") as changes:
        sh(client, sandbox_id, "cd /workspace && echo hi > a.txt && chmod 600 a.txt && mv a.txt b.txt && rm b.txt")
        events = take(changes, 5)
    assert [(e.type, e.path) for e in events] == [
        ("create", "/workspace/a.txt"),
        ("write", "/workspace/a.txt"),
        ("chmod", "/workspace/a.txt"),
        ("rename", "/workspace/a.txt"),
        ("remove", "/workspace/b.txt"),
    ]
    assert events[3].new_path == "/workspace/b.txt"
    assert not any(e.is_dir for e in events)
    assert changes.closed


def test_recursive_watch_picks_up_new_directories(client: WorkspaceClient, sandbox_id: str) -> None:
    sh(client, sandbox_id, "mkdir -p /workspace/src")
    with client.filesystem.watch(sandbox_id, "/workspace", recursive=True) as changes:
        iterator = iter(changes)
        sh(client, sandbox_id, "mkdir /workspace/src/pkg")
        created = next(iterator)
        assert (created.type, created.path, created.is_dir) == ("create", "/workspace/src/pkg", True)
        sh(client, sandbox_id, "echo x > /workspace/src/pkg/mod.py")
        later = [next(iterator) for _ in range(2)]
    assert [(e.type, e.path) for e in later] == [
        ("create", "/workspace/src/pkg/mod.py"),
        ("write", "/workspace/src/pkg/mod.py"),
    ]


def test_a_missing_path_raises_file_not_found(client: WorkspaceClient, sandbox_id: str) -> None:
    with pytest.raises(FileNotFoundError), client.filesystem.watch(sandbox_id, "/workspace/nope"):
        pass


def test_overflow_is_an_event(client: WorkspaceClient, sandbox_id: str) -> None:
    """A watcher that does not read while 200,000 changes happen: the kernel's queue
    overflows (nothing buffers without bound on the way), and that is reported, not lost."""
    # Two files in turn: the kernel merges only identical consecutive events.
    churn = (
        "import os\nfor p in ('/workspace/a', '/workspace/b'): open(p, 'w').close()\n"
        "for i in range(100000):\n"
        "    os.chmod('/workspace/a', 0o600 | i % 2)\n    os.chmod('/workspace/b', 0o600 | i % 2)\n"
    )
    with client.filesystem.watch(sandbox_id, "/workspace") as changes:
        client.process.run(sandbox_id, "python3", RunCommandOptions(args=["-c", churn]))
        events = iter(changes)  # one iterator: leaving a for loop with break closes the watch
        overflow = next(e for e in events if e.type == "overflow")
        assert overflow.path is None and overflow.message
        # Watching goes on after an overflow.
        client.filesystem.write(sandbox_id, "/workspace/after", b"")
        assert any(e.new_path == "/workspace/after" for e in events)


def test_closing_the_watch_removes_it(client: WorkspaceClient, sandbox_id: str) -> None:
    for _ in range(5):  # far more than the sandbox could keep if closing leaked the inotify instance
        with client.filesystem.watch(sandbox_id, "/workspace") as changes:
            sh(client, sandbox_id, "touch /workspace/t")
            assert next(iter(changes)).path == "/workspace/t"
    deadline = time.monotonic() + 10
    while True:  # the agent notices the closed stream within a poll interval
        listing = client.process.run(sandbox_id, "ls", RunCommandOptions(args=["-l", "/proc/1/fd"], user="root"))
        if "inotify" not in listing.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "inotify" not in listing.stdout


async def test_async_watch(aclient: AsyncWorkspaceClient, sandbox_id: str) -> None:
    async with aclient.filesystem.watch(sandbox_id, "/workspace", recursive=True) as changes:
        await aclient.filesystem.write(sandbox_id, "/workspace/deep/er/file.txt", b"data")
        seen: list[tuple[str, str | None]] = []
        async for event in changes:
            seen.append((event.type, event.path))
            if event.type == "rename" and event.new_path == "/workspace/deep/er/file.txt":
                break  # uploads are written beside the file, then renamed into place
    assert ("create", "/workspace/deep") in seen
    with pytest.raises(FileNotFoundError):
        async with aclient.filesystem.watch(sandbox_id, "/nope"):
            pass
