"""Owner shifting of a fork's disk (runtimes/disk_copy.py), on a scratch tree (needs root)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from workspace_server.runtimes.disk_copy import shift_owners

OLD, NEW, SIZE = 200000, 300000, 65536

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")


def test_owners_move_to_the_new_range_and_nothing_else_changes(tmp_path: Path) -> None:
    root = tmp_path / "rw"
    (root / "a" / "b").mkdir(parents=True)
    files = {
        root / "a" / "user.txt": (OLD + 1000, OLD + 1000),
        root / "a" / "b" / "root.txt": (OLD, OLD),
        root / "odd.txt": (OLD + 4242, OLD + 4343),
        root / "host.txt": (0, 0),  # outside the range: left alone
    }
    for path, (uid, gid) in files.items():
        path.write_text(path.name)
        os.chown(path, uid, gid)
    os.chown(root, OLD, OLD)
    os.chown(root / "a", OLD + 1000, OLD + 1000)
    suid = root / "a" / "suid"
    suid.write_text("x")
    os.chown(suid, OLD, OLD)
    os.chmod(suid, 0o4755)
    link = root / "link"
    link.symlink_to("/etc/passwd")  # must not be followed
    os.chown(link, OLD + 1000, OLD + 1000, follow_symlinks=False)
    hard = root / "hard"
    os.link(root / "a" / "user.txt", hard)  # one inode seen twice: shifted once
    passwd_owner = os.stat("/etc/passwd").st_uid

    seen = shift_owners(root, OLD, NEW, SIZE)

    assert seen == 10  # the root and 9 entries (the hard link counts as an entry)
    assert os.stat(root).st_uid == NEW
    assert os.stat(root / "a").st_uid == NEW + 1000
    for path, (uid, gid) in files.items():
        expected = (uid, gid) if uid == 0 else (uid - OLD + NEW, gid - OLD + NEW)
        assert (os.stat(path).st_uid, os.stat(path).st_gid) == expected, path
    assert os.lstat(link).st_uid == NEW + 1000
    assert os.stat("/etc/passwd").st_uid == passwd_owner
    assert os.stat(hard).st_uid == NEW + 1000
    assert stat.S_IMODE(os.stat(suid).st_mode) == 0o4755  # chown cleared it; it is put back
    assert os.stat(suid).st_uid == NEW


def test_a_deep_tree_is_walked_without_recursion_limits(tmp_path: Path) -> None:
    root = tmp_path / "rw"
    deep = root
    for _ in range(300):
        deep = deep / "d"
    deep.mkdir(parents=True)
    os.chown(deep, OLD + 5, OLD + 5)
    assert shift_owners(root, OLD, NEW, SIZE) == 301
    assert os.stat(deep).st_uid == NEW + 5
