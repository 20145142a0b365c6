"""inotify watches of the agent, on the host's own filesystem."""

from __future__ import annotations

import os
import select
import time
from pathlib import Path
from typing import Any

import pytest

from workspace_server.agent.watch import EVENT, IN_MOVED_FROM, IN_MOVED_TO, Watch


def collect(watch: Watch, until: int, timeout: float = 2.0) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(events) < until and time.monotonic() < deadline:
        ready, _, _ = select.select([watch.fd], [], [], 0.05)
        if ready:
            watch.read()
        events += watch.take(flush=not ready)
    return events


def test_each_kind_of_change_is_reported_with_its_path(tmp_path: Path) -> None:
    watch = Watch(str(tmp_path), recursive=False)
    try:
        target = tmp_path / "a.txt"
        target.write_bytes(b"x")
        os.chmod(target, 0o600)
        os.rename(target, tmp_path / "b.txt")
        (tmp_path / "b.txt").unlink()
        events = collect(watch, 5)
    finally:
        watch.close()
    kinds = [(e["type"], e["path"]) for e in events]
    assert kinds == [
        ("create", str(target)),
        ("write", str(target)),
        ("chmod", str(target)),
        ("rename", str(target)),
        ("remove", str(tmp_path / "b.txt")),
    ]
    assert events[3]["new_path"] == str(tmp_path / "b.txt")


def test_recursive_watch_follows_new_directories(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    watch = Watch(str(tmp_path), recursive=True)
    try:
        (tmp_path / "old" / "f").write_bytes(b"")
        (tmp_path / "new" / "deeper").mkdir(parents=True)
        events = collect(watch, 3)  # the agent reads on at once: new directories get watched
        (tmp_path / "new" / "deeper" / "g").write_bytes(b"1")
        events += collect(watch, 2)
    finally:
        watch.close()
    paths = {(e["type"], e["path"]) for e in events}
    assert ("create", str(tmp_path / "old" / "f")) in paths
    assert ("create", str(tmp_path / "new")) in paths
    assert ("create", str(tmp_path / "new" / "deeper" / "g")) in paths
    assert ("write", str(tmp_path / "new" / "deeper" / "g")) in paths


def test_missing_path_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        Watch(str(tmp_path / "nope"), recursive=False)


def test_removing_the_root_ends_the_watch(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    watch = Watch(str(root), recursive=False)
    try:
        root.rmdir()
        events = collect(watch, 1)
        collect(watch, 10, timeout=0.2)
    finally:
        watch.close()
    assert events[0]["type"] == "remove" and events[0]["path"] == str(root)
    assert watch.ended


def inotify_record(wd: int, mask: int, cookie: int, name: str) -> bytes:
    raw = name.encode() + b"\0" * (16 - len(name))
    return EVENT.pack(wd, mask, cookie, len(raw)) + raw


def test_a_rename_split_between_two_reads_is_still_one_rename(tmp_path: Path) -> None:
    watch = Watch(str(tmp_path), recursive=False)
    try:
        watch.feed(inotify_record(watch.root_wd, IN_MOVED_FROM, 7, "a.txt"))
        assert watch.take() == []  # held: its MOVED_TO may be in the next read
        watch.feed(inotify_record(watch.root_wd, IN_MOVED_TO, 7, "b.txt"))
        events = watch.take()
    finally:
        watch.close()
    assert events == [
        {"type": "rename", "path": str(tmp_path / "a.txt"), "is_dir": False, "new_path": str(tmp_path / "b.txt")}
    ]


def test_a_file_moved_out_of_the_tree_is_a_rename_to_nowhere(tmp_path: Path) -> None:
    watch = Watch(str(tmp_path), recursive=False)
    try:
        watch.feed(inotify_record(watch.root_wd, IN_MOVED_FROM, 9, "gone.txt"))
        assert watch.take() == []
        events = watch.take(flush=True)  # no MOVED_TO came in time
        watch.feed(inotify_record(watch.root_wd, IN_MOVED_TO, 9, "late.txt"))
        late = watch.take()
    finally:
        watch.close()
    assert events == [{"type": "rename", "path": str(tmp_path / "gone.txt"), "is_dir": False, "new_path": None}]
    assert late == [{"type": "create", "path": str(tmp_path / "late.txt"), "is_dir": False}]
