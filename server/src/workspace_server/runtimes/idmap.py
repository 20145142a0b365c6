"""Idmapped mounts (Linux >= 5.12): a template's layers are unpacked once with the image's own
uids (0, 1000...), and each sandbox sees them through a mount that shifts those onto its
own host uid range (runtimes/uid_ranges.py). Nothing is chowned or copied per sandbox, and
no two sandboxes share a host uid."""

from __future__ import annotations

import ctypes
import os
import subprocess
import threading
from pathlib import Path

from workspace_server.domain.errors import RuntimeFailure

# x86_64 and aarch64 share these numbers (the new mount API came after the tables merged).
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
SYS_MOUNT_SETATTR = 442
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = 0o2000000
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_IDMAP = 0x00100000

_libc = ctypes.CDLL(None, use_errno=True)


class _MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise RuntimeFailure(f"{what} failed: {os.strerror(errno)}")
    return result


class UserNamespaces:
    """One user namespace per host uid range, mapping 0..size-1 onto it: what an idmapped
    mount needs to know the shift. Made once per range (a helper process that exits at
    once; the namespace lives on through the kept fd)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()

    def fd(self, host_base: int) -> int:
        with self._lock:
            found = self._fds.get(host_base)
            if found is None:
                found = self._fds[host_base] = self._make(host_base)
            return found

    def _make(self, host_base: int) -> int:
        helper = subprocess.Popen(
            ["unshare", "--user", "--", "/bin/sh", "-c", "echo ready; read _"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert helper.stdout is not None and helper.stdin is not None
            if helper.stdout.readline() != b"ready\n":
                raise RuntimeFailure("could not create a user namespace for an idmapped mount")
            for name in ("uid_map", "gid_map"):
                with open(f"/proc/{helper.pid}/{name}", "w") as mapping:
                    mapping.write(f"0 {host_base} {self.size}\n")
            return os.open(f"/proc/{helper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            if helper.stdin is not None:
                helper.stdin.close()
            helper.kill()
            helper.wait()


def mount_idmapped(source: Path, target: Path, userns_fd: int) -> None:
    """Bind `source` on `target`, read-only, nosuid, nodev, its owners shifted by the namespace."""
    tree = _check(
        _libc.syscall(SYS_OPEN_TREE, AT_FDCWD, str(source).encode(), OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC),
        f"open_tree({source})",
    )
    try:
        attr = _MountAttr(MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, userns_fd)
        _check(
            _libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, ctypes.byref(attr), ctypes.sizeof(attr)),
            f"mount_setattr({source})",
        )
        _check(
            _libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, str(target).encode(), MOVE_MOUNT_F_EMPTY_PATH),
            f"move_mount({target})",
        )
    finally:
        os.close(tree)
