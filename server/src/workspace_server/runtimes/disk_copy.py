"""Copying a sandbox's disk for a fork: a consistent image, then every owner moved from
the source's host uid range to the fork's.

The copy is taken with the source's file system frozen (`fsfreeze`: the kernel flushes it
and holds every writer, the agent's uploads included, until it is thawed), so the image is
a clean file system, not a torn one. Sparse: only the blocks in use are read and written.

The fork runs in a user namespace of its own range: a file the source's root owned (host
uid R) must belong to the fork's root (host uid R'), every owner shifted by R' - R.
Ownership is rewritten on the host, on the copy, before any sandbox can see it; symlinks
are never followed (lchown), and the walk keeps one open directory per level (never a
path), so a tree of any shape is walked without resolving a name twice. chown clears the
set-user-ID and set-group-ID bits, which are put back.

Not carried over: ids inside POSIX ACLs and namespaced file capabilities
(security.capability v3 names the source's root uid): both refer to the source's range,
so in the fork such an ACL entry names nobody, and such a capability is ignored.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

from workspace_server.domain.errors import RuntimeFailure, StorageError
from workspace_server.runtimes.host_commands import run_host_command

FROZEN_MARK = "fs-frozen"  # beside the image while its file system is frozen for a copy


async def copy_image(source_image: Path, source_mount: Path, target_image: Path) -> None:
    """Copy a (possibly mounted) ext4 image; a mounted one is frozen for the copy."""
    mark = source_image.parent / FROZEN_MARK
    frozen = False
    if os.path.ismount(source_mount):
        mark.touch()  # first: a crash while frozen is then undone on the next start
        code, out = await run_host_command("fsfreeze", "--freeze", str(source_mount))
        if code != 0:
            mark.unlink(missing_ok=True)
            raise RuntimeFailure(f"could not freeze the sandbox's file system for the copy: {out}")
        frozen = True
    try:
        code, out = await run_host_command("cp", "--sparse=always", str(source_image), str(target_image))
        if code != 0:
            if "No space left" in out:
                raise StorageError("no space left in the data dir for the fork's copy of the disk")
            raise RuntimeFailure(f"could not copy the sandbox's disk: {out}")
    finally:
        if frozen:
            await thaw_file_system(source_mount)
    await give_own_uuid(target_image)


async def give_own_uuid(image: Path) -> None:
    """A copied ext4 image gets a UUID of its own: copies would share it, and with it the
    file system id that tools tell file systems apart by (nfs-ganesha skips a second file
    system with a known id, so it could not export the copy). Instant on images made with
    metadata_csum_seed (no checksum to rewrite)."""
    code, out = await run_host_command("tune2fs", "-U", "random", str(image))
    if code != 0:
        raise RuntimeFailure(f"could not give the sandbox's disk a UUID of its own: {out}")


async def thaw_file_system(mount: Path) -> None:
    """Undo copy_image's fsfreeze, also one a server crash left behind (a file system
    frozen for good would hang every writer). Cheap when there is nothing to undo."""
    mark = mount.parent / FROZEN_MARK
    if not mark.exists():
        return
    if os.path.ismount(mount):
        await run_host_command("fsfreeze", "--unfreeze", str(mount))
    mark.unlink(missing_ok=True)


def _shift(value: int, old_base: int, new_base: int, size: int) -> int:
    return value - old_base + new_base if old_base <= value < old_base + size else -1


def _fix_owner(dir_fd: int, name: str, st: os.stat_result, old_base: int, new_base: int, size: int) -> None:
    uid = _shift(st.st_uid, old_base, new_base, size)
    gid = _shift(st.st_gid, old_base, new_base, size)
    if uid == -1 and gid == -1:
        return
    os.chown(name, uid, gid, dir_fd=dir_fd, follow_symlinks=False)
    special = st.st_mode & (stat.S_ISUID | stat.S_ISGID)
    if special and not stat.S_ISLNK(st.st_mode) and not stat.S_ISDIR(st.st_mode):
        os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dir_fd)


def _entries(fd: int) -> Iterator[os.DirEntry[str]]:
    with os.scandir(fd) as listing:
        yield from listing


def shift_owners(root: Path, old_base: int, new_base: int, size: int) -> int:
    """Move every owner in [old_base, old_base + size) of the tree at `root` to the same
    offset from new_base. Returns how many entries were looked at."""
    top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    seen = 1
    stack: list[tuple[int, Iterator[os.DirEntry[str]]]] = []
    try:
        uid = _shift(os.fstat(top).st_uid, old_base, new_base, size)
        gid = _shift(os.fstat(top).st_gid, old_base, new_base, size)
        if uid != -1 or gid != -1:
            os.fchown(top, uid, gid)
        stack.append((top, _entries(top)))
        while stack:
            fd, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                os.close(fd)
                continue
            seen += 1
            st = entry.stat(follow_symlinks=False)
            _fix_owner(fd, entry.name, st, old_base, new_base, size)
            if stat.S_ISDIR(st.st_mode):
                child = os.open(entry.name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                stack.append((child, _entries(child)))
    except OSError as exc:
        raise RuntimeFailure(f"could not give the fork's files their owners: {exc}") from None
    finally:
        for fd, _ in stack:
            with contextlib.suppress(OSError):
                os.close(fd)
    return seen
