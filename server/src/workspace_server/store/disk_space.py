"""The data dir's file system: what sandbox disks are promised is reserved, and a reserve is
kept for the server's own state.

A sandbox's disk is an ext4 image of disk_mb. Left sparse, it holds only what was written
so far, so sandboxes that each stay within their own quota could together fill the host's
file system: then a neighbour's write fails inside its own quota, and the server can no
longer write its state. So every image's promise is reserved, one of two ways:

- **accounted** (the default), as ZFS's `refreservation` does: images stay sparse, and a
  new disk is admitted only if it fits in what is free beside the reserve *and* beside what
  every existing image may still write (its size less the blocks it already has). A
  sandbox's writes take from its own promise and from the free space alike, so the
  promises always fit, and the host's disk holds only what sandboxes wrote (a template's
  sandboxes cost what they change, not disk_mb each). What it cannot protect against is
  another program on the same file system: the ballast below keeps the server working then,
  but sandboxes may meet ENOSPC inside their quota.
- **preallocated** (`--disk-preallocate`): an image's blocks are allocated in full when it
  is made (`fallocate`: unwritten extents, no data written; ~3 ms per GiB on ext4), so
  nothing else on the file system can take them. Each sandbox then holds disk_mb of the
  host's disk from its first moment (warm pool sandboxes too).

Either way, a create that does not fit is refused with RESOURCE_EXHAUSTED, saying how much
it needed and how much was free.

The reserve (`--disk-reserve-mb`) is the part of the file system sandbox disks never take:
the server's state database, bundles, template imports and snapshots in flight. Half of it
is held by a ballast: CHUNKS files under `disk-reserve/`, allocated, never read. If the file
system fills anyway (an import, another program on the host), a chunk is released, then
another if it fills again, so the server can still write its state, start, recover and
delete sandboxes (which frees their whole images). Chunks are taken back once there is
room again; creates that would eat into the reserve are refused meanwhile.

`overcommit` (`--disk-overcommit`) keeps images sparse and admits every create: thin
provisioning, for operators who watch the host's disk themselves.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import secrets
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from workspace_server.domain.errors import ResourceExhausted

log = logging.getLogger(__name__)

BALLAST = "disk-reserve"
TRASH = "disk-trash"  # images of deleted sandboxes, unlinked in the background
CHUNKS = 4
MIB = 1024 * 1024

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def allocate(fd: int, size: int) -> None:
    """fallocate(2) itself: Python's posix_fallocate falls back to writing zeros where the
    file system cannot allocate (that would write every byte of a disk)."""
    if _libc.fallocate(fd, 0, 0, size) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))


def allocated_bytes(path: Path) -> int:
    try:
        return os.stat(path).st_blocks * 512
    except FileNotFoundError:
        return 0


class DataDirSpace:
    """Admission and allocation of sandbox disks, and the ballast (see the module's doc)."""

    def __init__(self, data_dir: Path, reserve_bytes: int, overcommit: bool = False, preallocate: bool = False) -> None:
        self.data_dir = data_dir
        self.reserve = max(0, reserve_bytes)
        self.preallocate = preallocate
        self._images: Callable[[], Iterable[Path]] = tuple
        self.chunk_size = self.reserve // 2 // CHUNKS
        self.overcommit = overcommit
        self.ballast = data_dir / BALLAST
        # Below this much free space a chunk of the ballast is given up for the server's own writes.
        self.low_water = self.chunk_size
        self._lock = threading.Lock()  # admission and allocation, one image at a time
        self._supported = True
        self.trash = data_dir / TRASH
        self._unlinker = ThreadPoolExecutor(1, thread_name_prefix="disk-trash")
        self._pending = 0  # bytes of trashed images not unlinked yet
        self._pending_lock = threading.Lock()

    # ------------------------------------------------------------------ figures
    def free(self) -> int:
        """Bytes an unprivileged writer may still allocate on the data dir's file system."""
        stat = os.statvfs(self.data_dir)
        return stat.f_bavail * stat.f_frsize

    def _chunks(self) -> list[Path]:
        return [self.ballast / str(index) for index in range(CHUNKS)]

    def held(self) -> int:
        return sum(min(allocated_bytes(chunk), self.chunk_size) for chunk in self._chunks())

    def track(self, images: Callable[[], Iterable[Path]]) -> None:
        """Where the sandboxes' disk images are (the runtime's bundles), for `promised`."""
        self._images = images

    def promised(self, excluding: Path | None = None) -> int:
        """What the existing images may still write: each one's size less the blocks it has
        (0 for a preallocated image)."""
        total = 0
        for image in self._images():
            if image == excluding:
                continue
            try:
                info = os.stat(image)
            except FileNotFoundError:
                continue
            total += max(0, info.st_size - info.st_blocks * 512)
        return total

    def available(self, excluding: Path | None = None, *, beside_promises: bool = True) -> int:
        """What a new sandbox disk may still take: everything but the reserve and (unless
        told otherwise) what the existing images were promised (the part the ballast holds
        is not free already; trashed images are about to be)."""
        promised = self.promised(excluding) if beside_promises else 0
        return self.free() + self.held() + self._pending - self.reserve - promised

    # ------------------------------------------------------------------ deleted disks
    def sweep_trash(self) -> None:
        """At start: images a previous server trashed but did not unlink."""
        if self.trash.is_dir():
            for image in self.trash.iterdir():
                image.unlink(missing_ok=True)

    def discard_image(self, image: Path) -> None:
        """Remove a deleted sandbox's disk image off the caller's path: freeing a disk's
        blocks takes tens of milliseconds with online discard, which a delete need not wait
        for. Its blocks count as free meanwhile; an allocation that meets ENOSPC waits for
        the unlinks first."""
        size = allocated_bytes(image)
        self.trash.mkdir(mode=0o700, exist_ok=True)
        trashed = self.trash / f"{image.parent.name}-{secrets.token_hex(4)}.img"  # named by its sandbox
        os.rename(image, trashed)
        with self._pending_lock:
            self._pending += size
        self._unlinker.submit(self._unlink, trashed, size)

    def _unlink(self, image: Path, size: int) -> None:
        try:
            image.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not remove the deleted disk image %s: %s", image, exc)
        finally:
            with self._pending_lock:
                self._pending -= size

    def _wait_for_trash(self) -> None:
        self._unlinker.submit(lambda: None).result()  # one worker: every earlier unlink is done

    # ------------------------------------------------------------------ sandbox disks
    def check(self, size: int, what: str = "the sandbox's disk") -> None:
        """Refuse early (before any work) what cannot fit; `allocate_image` checks again."""
        if self.overcommit:
            return
        available = self.available()
        if size > available:
            raise self.exhausted(size, available, what)

    def admit_write(self, size: int, what: str) -> None:
        """Admit `size` more bytes of the server's own writes that no sandbox disk promised (an
        import's upload and layers, a snapshot's or a build step's changes): they take what
        is free beside the reserve and, unless overcommitted, beside the disks' promises.
        Unlike disks, they are held to the reserve in overcommit mode too: nobody promised
        them, and the server's state must still fit."""
        available = self.available(beside_promises=not self.overcommit)
        if size > available:
            raise self.exhausted(size, available, what)

    def allocate_image(self, image: Path, size: int | None = None, what: str = "the sandbox's disk") -> None:
        """Admit `image` (made sparse, of `size`: default its length) if what it still lacks
        fits beside the reserve and the other images' promises, RESOURCE_EXHAUSTED if not;
        preallocated, allocate its every block too."""
        if self.overcommit:
            return
        with self._lock:  # one admission at a time: each sees the images admitted before it
            if size is None:
                size = os.stat(image).st_size
            needed = max(0, size - allocated_bytes(image))
            available = self.available(excluding=image)
            if needed > available:
                raise self.exhausted(needed, available, what)
            if not self.preallocate or not self._supported:
                return  # accounted: the image's size is its promise
            fd = os.open(image, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
            try:
                try:
                    allocate(fd, size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC or not self._pending:
                        raise
                    self._wait_for_trash()  # counted as free: it is, once unlinked
                    allocate(fd, size)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise self.exhausted(needed, self.available(), what) from None
                if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS):
                    self._unsupported(exc)
                    return
                raise
            finally:
                os.close(fd)

    def _unsupported(self, exc: OSError) -> None:
        self._supported = False
        log.warning(
            "the file system of %s cannot allocate ahead (fallocate: %s): sandbox disks stay sparse and are "
            "accounted, and no ballast is held",
            self.data_dir,
            exc.strerror,
        )

    def exhausted(self, needed: int, available: int, what: str) -> ResourceExhausted:
        return ResourceExhausted(
            f"not enough disk space on the server for {what}: it needs {ceil_mib(needed)} MiB, "
            f"{max(0, available) // MIB} MiB are free beside the server's reserve",
            needed_mb=ceil_mib(needed),
            free_mb=max(0, available) // MIB,
            reserve_mb=self.reserve // MIB,
        )

    # ------------------------------------------------------------------ the ballast
    def make_room(self) -> bool:
        """The file system is (nearly) full: release a chunk of the ballast so the server's
        own writes work. True if that freed something."""
        free = self.free()
        if free >= self.low_water and free > 0:
            return False
        for chunk in self._chunks():
            held = allocated_bytes(chunk)
            if held:
                chunk.unlink(missing_ok=True)
                log.warning(
                    "the data dir's file system is full: released %d MiB of the ballast so the server can keep "
                    "its state and delete sandboxes (%d MiB left); creates that do not fit beside the reserve "
                    "are refused",
                    held // MIB,
                    self.held() // MIB,
                )
                return True
        return False

    def keep_reserve(self) -> None:
        """Periodically: give a chunk of the ballast up when the file system is full, take
        chunks back once there is room for them and the low-water mark besides."""
        if self.make_room() or not self._supported or self.chunk_size == 0:
            return
        for chunk in self._chunks():
            missing = self.chunk_size - allocated_bytes(chunk)
            if missing <= 0:
                continue
            if self.free() < missing + 2 * self.low_water:
                return
            try:
                self.ballast.mkdir(mode=0o700, exist_ok=True)
                fd = os.open(chunk, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except OSError as exc:
                log.warning("could not make the disk reserve %s: %s", chunk, exc)
                return
            try:
                allocate(fd, self.chunk_size)
            except OSError as exc:
                if exc.errno in (errno.EOPNOTSUPP, errno.ENOSYS):
                    self._unsupported(exc)
                elif exc.errno != errno.ENOSPC:
                    log.warning("could not make the disk reserve %s: %s", chunk, exc)
                return
            finally:
                os.close(fd)


def ceil_mib(size: int) -> int:
    return -(-size // MIB)
