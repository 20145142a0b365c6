"""File operations, run inside the sandbox's own root (so no path can name a host file).

New files and directories belong to the owner of the directory that holds them.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import time

from . import ops, wire
from .errors import OpError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional, Tuple

    from .link import Stream

LIST_CHUNK = 64 * 1024  # bytes of JSON lines per data frame


def iso_time(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(timestamp)) + ".%06dZ" % (timestamp % 1 * 1e6)


def file_type(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISREG(mode):
        return "file"
    return "other"


def file_info(path: str, st: Optional[os.stat_result] = None) -> Dict[str, Any]:
    if st is None:
        st = os.lstat(path)
    name = os.path.basename(path.rstrip("/")) or "/"
    return {
        "name": name,
        "path": path,
        "type": file_type(st.st_mode),
        "size": st.st_size,
        "modified_at": iso_time(st.st_mtime),
        "mode": "%04o" % stat.S_IMODE(st.st_mode),
    }


def check_regular(st: os.stat_result, path: str) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise OpError("IS_A_DIRECTORY", "%s is a directory" % path, path=path)
    if not stat.S_ISREG(st.st_mode):
        raise OpError("INVALID_REQUEST", "%s is not a regular file (%s)" % (path, file_type(st.st_mode)), path=path)


def owner_of(path: str) -> Tuple[int, int]:
    st = os.stat(path)
    return st.st_uid, st.st_gid


def make_dirs(path: str) -> None:
    """mkdir -p, each new directory owned like the directory that holds it."""
    missing = []
    current = path
    while not os.path.isdir(current):
        if os.path.lexists(current):
            raise OpError("NOT_A_DIRECTORY", "%s is not a directory" % current, path=current)
        missing.append(current)
        current = os.path.dirname(current)
    uid, gid = owner_of(current)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o755)
        except FileExistsError:
            continue
        os.lchown(directory, uid, gid)


def chown_tree(path: str, uid: int, gid: int) -> None:
    os.lchown(path, uid, gid)
    if os.path.isdir(path) and not os.path.islink(path):
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), uid, gid)


def _placed(path: str) -> str:
    """`path` with its parent resolved (the last component itself is not followed)."""
    return os.path.join(os.path.realpath(os.path.dirname(path) or "/"), os.path.basename(path.rstrip("/")))


def refuse_mount_point(path: str, verb: str) -> None:
    if os.path.realpath(path) == "/" or (os.path.isdir(path) and not os.path.islink(path) and os.path.ismount(path)):
        raise OpError("INVALID_REQUEST", "%s is a mount point: it cannot be %s" % (path, verb), path=path)


def refuse_into_itself(source: str, destination: str, verb: str) -> None:
    """Copying or moving something onto itself or into itself is the caller's mistake."""
    src, dst = _placed(source), _placed(destination)
    same = os.path.lexists(destination) and os.path.samestat(os.lstat(source), os.lstat(destination))
    if same or dst == src or dst.startswith(src.rstrip("/") + "/"):
        raise OpError("INVALID_REQUEST", "cannot %s %s onto or into itself" % (verb, source), path=source)


def target_for(source: str, destination: str) -> str:
    """Like cp and mv: an existing directory as destination receives the source inside it."""
    if os.path.isdir(destination) and not os.path.islink(destination):
        return os.path.join(destination, os.path.basename(source.rstrip("/")))
    return destination


# --------------------------------------------------------------------------- agent


# ---------------------------------------------------------------- operations


def op_stat(stream: Stream, request: Dict[str, Any]) -> None:
    stream.finish(ops.ok(info=file_info(request["path"])))


def op_exists(stream: Stream, request: Dict[str, Any]) -> None:
    stream.finish(ops.ok(exists=os.path.lexists(request["path"])))


def op_list(stream: Stream, request: Dict[str, Any]) -> None:
    """ready(), then one JSON line per entry (sorted by name) as data frames, then end().

    Data frames are under flow control, so a client that reads a long listing slowly holds
    up this thread, never a growing buffer on the host."""
    path = request["path"]
    with os.scandir(path) as scan:
        entries = sorted(scan, key=lambda e: e.name)
    stream.send(ops.ready())
    lines: List[bytes] = []
    size = 0
    for entry in entries:
        try:
            info = file_info(entry.path, entry.stat(follow_symlinks=False))
        except FileNotFoundError:
            continue  # removed while we listed
        line = json.dumps(info, separators=(",", ":")).encode() + b"\n"
        lines.append(line)
        size += len(line)
        if size >= LIST_CHUNK:
            if not stream.send_data(wire.OUT, b"".join(lines)):
                stream.forget()
                return
            lines, size = [], 0
    if lines and not stream.send_data(wire.OUT, b"".join(lines)):
        stream.forget()
        return
    stream.finish(ops.end())


def op_mkdir(stream: Stream, request: Dict[str, Any]) -> None:
    path = request["path"]
    if request.get("recursive"):
        make_dirs(path)
    else:
        os.mkdir(path, 0o755)
        uid, gid = owner_of(os.path.dirname(path) or "/")
        os.lchown(path, uid, gid)
    stream.finish(ops.ok(info=file_info(path)))


def op_remove(stream: Stream, request: Dict[str, Any]) -> None:
    path = request["path"]
    st = os.lstat(path)
    refuse_mount_point(path, "deleted")
    if stat.S_ISDIR(st.st_mode):
        if request.get("recursive"):
            shutil.rmtree(path)
        else:
            os.rmdir(path)
    else:
        os.unlink(path)
    stream.finish(ops.ok())


def op_move(stream: Stream, request: Dict[str, Any]) -> None:
    source = request["source"]
    os.lstat(source)
    refuse_mount_point(source, "moved")
    destination = target_for(source, request["destination"])
    refuse_into_itself(source, destination, "move")
    try:
        os.rename(source, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.move(source, destination)
    stream.finish(ops.ok(info=file_info(destination)))


def op_copy(stream: Stream, request: Dict[str, Any]) -> None:
    source = request["source"]
    st = os.lstat(source)
    destination = target_for(source, request["destination"])
    refuse_into_itself(source, destination, "copy")
    uid, gid = owner_of(os.path.dirname(destination) or "/")
    if stat.S_ISDIR(st.st_mode):
        if not request.get("recursive", True):
            raise OpError("IS_A_DIRECTORY", "%s is a directory" % source, path=source)
        try:
            shutil.copytree(source, destination, symlinks=True)
        except shutil.Error as exc:  # one entry per file that failed: name the first, count the rest
            failures = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
            first = failures[0] if failures else ("", "", str(exc))
            raise OpError(
                "PERMISSION_DENIED",
                "%d files of %s could not be copied; the first: %s: %s" % (len(failures), source, first[0], first[2]),
                path=source,
            ) from None
    elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
        shutil.copy2(source, destination, follow_symlinks=False)
    else:
        raise OpError("INVALID_REQUEST", "%s is not a regular file" % source, path=source)
    chown_tree(destination, uid, gid)
    stream.finish(ops.ok(info=file_info(destination)))


def op_read(stream: Stream, request: Dict[str, Any]) -> None:
    path = request["path"]
    check_regular(os.stat(path), path)  # sockets, devices and fifos: refused before open
    # O_NONBLOCK: should a fifo appear in the meantime, opening it must not hang.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        check_regular(st, path)
        stream.send(ops.ok(size=st.st_size))
        while True:
            data = os.read(fd, wire.CHUNK)
            if not data or not stream.send_data(wire.OUT, data):
                break
    finally:
        os.close(fd)
    if not stream.closed:
        stream.finish(ops.end())
    else:
        stream.forget()


def op_write(stream: Stream, request: Dict[str, Any]) -> None:
    path = request["path"]
    parent = os.path.dirname(path) or "/"
    make_dirs(parent)
    if os.path.isdir(path):
        raise OpError("IS_A_DIRECTORY", "%s is a directory" % path, path=path)
    if os.path.lexists(path) and not stat.S_ISREG(os.stat(path).st_mode if os.path.exists(path) else 0o100000):
        raise OpError("INVALID_REQUEST", "%s is not a regular file" % path, path=path)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        mode = 0o644
    uid, gid = owner_of(parent)
    import tempfile

    fd, temp_path = tempfile.mkstemp(prefix=".ws-upload-", dir=parent)
    completed = False
    try:
        stream.send(ops.ready())
        while True:
            what, value = stream.inbox.get()
            if what == "data":
                view = memoryview(value)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                stream.grant(len(value))
            elif what == "msg" and value.get("type") == ops.EOF:
                break
            elif what == "closed":
                return
        os.fchmod(fd, mode)
        os.fchown(fd, uid, gid)
        os.close(fd)
        fd = -1
        os.rename(temp_path, path)
        completed = True
    finally:
        if fd >= 0:
            os.close(fd)
        if not completed:
            try:
                os.unlink(temp_path)
            except OSError:
                pass
    stream.finish(ops.ok(info=file_info(path)))
