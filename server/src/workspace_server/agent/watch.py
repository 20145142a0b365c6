"""File watching with inotify, inside the sandbox.

Standard library only (inotify through ctypes; imported only when a watch starts, so the
agent's start-up does not pay for ctypes). A watch reports create, write, remove, rename
and chmod events with the path they concern; the kernel's queue overflowing is an event of
its own, never a silent loss.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import select
import stat
import struct
import time

from . import confined, ops, wire
from .errors import OpError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional

    from .link import Stream

IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ISDIR = 0x40000000
IN_EXCL_UNLINK = 0x04000000
IN_DONT_FOLLOW = 0x02000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

WATCH_MASK = (
    IN_CREATE | IN_MODIFY | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF
) | IN_EXCL_UNLINK
# Never through a link: a directory swapped for one after it was checked is not followed.
ADD_MASK = WATCH_MASK | IN_DONT_FOLLOW
EVENT = struct.Struct("iIII")
READ_SIZE = 64 * 1024

_libc: Any = None


PAIR_WAIT_MS = 20  # how long a rename's first half waits for its second
MAX_HELD = 4096  # events held back behind an unpaired rename, at most


def libc() -> Any:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.inotify_add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    return _libc


class WatchError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _failure(what: str) -> WatchError:
    number = ctypes.get_errno()
    if number in (errno.ENOSPC, errno.EMFILE, errno.ENFILE, errno.ENOMEM):
        return WatchError(
            "RESOURCE_EXHAUSTED", "%s: the sandbox's inotify limits are reached (%s)" % (what, os.strerror(number))
        )
    if number == errno.ENOENT:
        return WatchError("FILE_NOT_FOUND", "%s: no such file or directory" % what)
    if number in (errno.EACCES, errno.EPERM):
        return WatchError("PERMISSION_DENIED", "%s: %s" % (what, os.strerror(number)))
    return WatchError("INTERNAL", "%s: %s" % (what, os.strerror(number)))


class Watch:
    """One inotify instance watching a path (and, if recursive, every directory below).

    Events name paths under `path`, as the client asked; the watches are added under `real`
    (default: `path`), where that place is pinned for the operating system (a confined.Place's
    path, through the descriptor of its directory), so a link swapped in later is not
    followed there."""

    def __init__(self, path: str, recursive: bool, real: Optional[str] = None) -> None:
        self.root = path.rstrip("/") or "/"
        self.real_root = real if real is not None else self.root
        st = os.stat(self.real_root)  # FileNotFoundError -> FILE_NOT_FOUND for the caller
        self.recursive = recursive and stat.S_ISDIR(st.st_mode)
        self.root_is_dir = stat.S_ISDIR(st.st_mode)
        self.fd = libc().inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self.fd < 0:
            raise _failure("inotify_init")
        self.paths: Dict[int, str] = {}
        self.root_wd = -1
        self.ended: Optional[str] = None  # why the watch ended (its root went away)
        # The kernel queues a rename as MOVED_FROM then MOVED_TO; a read can fall between
        # them. Events from an unpaired MOVED_FROM on are held until its pair arrives or
        # `take(flush=True)` gives up on it (the file left the watched tree).
        self.moved_from: Dict[int, Dict[str, Any]] = {}
        self.held: List[Dict[str, Any]] = []
        self.holding_since: Optional[float] = None
        try:
            self.root_wd = self._add(self.root)
            if self.recursive:
                self._add_tree(self.root, None)
        except BaseException:
            self.close()
            raise

    def _real(self, path: str) -> str:
        """Where a path the events name is for the operating system."""
        return self.real_root + (path if self.root == "/" else path[len(self.root) :])

    def _add(self, path: str) -> int:
        wd = int(libc().inotify_add_watch(self.fd, os.fsencode(self._real(path)), ADD_MASK))
        if wd < 0:
            raise _failure(path)
        self.paths[wd] = path
        return wd

    def _add_tree(self, top: str, found: Optional[List[Dict[str, Any]]]) -> None:
        """Watch every directory below `top`; with `found`, also report what is already
        there (a directory created after the watch started may have been filled before
        we could watch it)."""
        real_top = self._real(top)
        for real_dir, dirs, files in os.walk(real_top):
            directory = top + real_dir[len(real_top) :]
            for name in dirs:
                path = os.path.join(directory, name)
                if os.path.islink(os.path.join(real_dir, name)):
                    continue
                try:
                    self._add(path)
                except WatchError as exc:
                    if exc.code != "FILE_NOT_FOUND":
                        raise
                if found is not None:
                    found.append({"type": "create", "path": path, "is_dir": True})
            if found is not None:
                for name in files:
                    found.append({"type": "create", "path": os.path.join(directory, name), "is_dir": False})

    def read(self) -> None:
        """Queue the events waiting now (the fd is non-blocking: poll it first)."""
        try:
            buffer = os.read(self.fd, READ_SIZE)
        except BlockingIOError:
            return
        self.feed(buffer)

    def feed(self, buffer: bytes) -> None:
        """Queue the events of one read of the inotify fd."""
        position = 0
        while position + EVENT.size <= len(buffer):
            wd, mask, cookie, length = EVENT.unpack_from(buffer, position)
            position += EVENT.size
            name = buffer[position : position + length].split(b"\0", 1)[0]
            position += length
            self._translate(wd, mask, cookie, os.fsdecode(name))

    @property
    def awaiting_pair(self) -> bool:
        """A rename's MOVED_FROM has arrived without its MOVED_TO (yet)."""
        return bool(self.moved_from)

    def take(self, flush: bool = False) -> List[Dict[str, Any]]:
        """The events ready to send: all of them, unless a rename still waits for its pair
        (then none, so order is kept), or `flush` says to stop waiting."""
        if self.moved_from and not flush and len(self.held) < MAX_HELD:
            now = time.monotonic()
            if self.holding_since is None:
                self.holding_since = now
            if now - self.holding_since < PAIR_WAIT_MS / 1000:
                return []
        self.holding_since = None
        self.moved_from.clear()
        events, self.held = self.held, []
        return events

    def _translate(self, wd: int, mask: int, cookie: int, name: str) -> None:
        events, moved_from = self.held, self.moved_from
        if mask & IN_Q_OVERFLOW:
            events.append({"type": "overflow", "message": "the kernel's event queue overflowed: changes were lost"})
            return
        base = self.paths.get(wd)
        if base is None:
            return
        if mask & IN_IGNORED:
            self.paths.pop(wd, None)
            if wd == self.root_wd:
                self.ended = "the watched path %s was removed" % self.root
            return
        if mask & (IN_DELETE_SELF | IN_MOVE_SELF):
            if wd == self.root_wd:
                kind = "remove" if mask & IN_DELETE_SELF else "rename"
                event: Dict[str, Any] = {"type": kind, "path": self.root, "is_dir": self.root_is_dir}
                if kind == "rename":
                    event["new_path"] = None
                events.append(event)
                if mask & IN_MOVE_SELF:
                    self.ended = "the watched path %s was moved away" % self.root
            return
        path = os.path.join(base, name) if name else base
        is_dir = bool(mask & IN_ISDIR)
        if mask & IN_MOVED_FROM:
            event = {"type": "rename", "path": path, "is_dir": is_dir, "new_path": None}
            moved_from[cookie] = event
            events.append(event)
            if is_dir:
                self._forget_tree(path)
            return
        if mask & IN_MOVED_TO:
            source = moved_from.pop(cookie, None)
            if source is not None:
                source["new_path"] = path
            else:
                events.append({"type": "create", "path": path, "is_dir": is_dir})
            if is_dir and self.recursive:
                # Moved within the tree: its entries are not new, so they are not reported.
                self._watch_new_dir(path, events if source is None else None)
            return
        if mask & IN_CREATE:
            events.append({"type": "create", "path": path, "is_dir": is_dir})
            if is_dir and self.recursive:
                self._watch_new_dir(path, events)
        elif mask & IN_DELETE:
            events.append({"type": "remove", "path": path, "is_dir": is_dir})
        elif mask & IN_MODIFY:
            events.append({"type": "write", "path": path, "is_dir": is_dir})
        elif mask & IN_ATTRIB:
            events.append({"type": "chmod", "path": path, "is_dir": is_dir})

    def _watch_new_dir(self, path: str, found: Optional[List[Dict[str, Any]]]) -> None:
        try:
            self._add(path)
            self._add_tree(path, found)
        except WatchError as exc:
            if exc.code != "FILE_NOT_FOUND" and found is not None:  # gone again already: nothing to watch
                found.append({"type": "overflow", "message": "%s is not watched: %s" % (path, exc.message)})

    def _forget_tree(self, path: str) -> None:
        """A directory moved away: its watches would report under a stale path."""
        prefix = path + "/"
        for wd, watched in list(self.paths.items()):
            if watched == path or watched.startswith(prefix):
                libc().inotify_rm_watch(self.fd, wd)
                self.paths.pop(wd, None)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # removes every watch of the instance
            self.fd = -1


def op_watch(stream: Stream, request: Dict[str, Any]) -> None:
    """Watch a path until the host closes the stream. Events go out as JSON lines on the
    data channel: under flow control, so a slow reader stalls only this watch, and the
    kernel's queue overflowing is then reported as an event.

    The path is resolved as the files API's reads are (confined.py): a link owned by the
    user lends the watch only the user's authority, so a watch through it must be one the
    user could read (list) there, the whole tree for a recursive one."""
    path = request["path"]
    recursive = bool(request.get("recursive"))
    place = confined.resolve(path, follow_last=True)
    try:
        place.check_read(tree=recursive)
        watch = Watch(path, recursive, real=place.path)
    except WatchError as exc:
        place.close()
        raise OpError(exc.code, exc.message, path=path) from None
    except BaseException:
        place.close()
        raise
    try:
        stream.send(ops.ready())
        poller = select.poll()
        poller.register(watch.fd, select.POLLIN)
        while not stream.closed:
            # A held rename waits briefly for its MOVED_TO: the kernel queues both in one
            # rename(2), so a pair split between two reads completes within microseconds.
            ready = poller.poll(PAIR_WAIT_MS if watch.awaiting_pair else 250)
            if ready:
                watch.read()
            elif not watch.awaiting_pair:
                continue  # now and then: has the host closed the stream?
            events = watch.take(flush=not ready)
            if events:
                lines = b"".join(json.dumps(event, separators=(",", ":")).encode() + b"\n" for event in events)
                if not stream.send_data(wire.OUT, lines):
                    break
            if watch.ended:
                stream.finish(ops.error("FILE_NOT_FOUND", watch.ended, {"path": path}))
                return
        stream.forget()
    finally:
        watch.close()
        place.close()
