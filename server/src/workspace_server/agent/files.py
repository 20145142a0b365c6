"""File operations, run inside the sandbox's own root (so no path can name a host file).

New files and directories belong to the owner of the directory that holds them.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import time

from . import confined, ops, wire
from .errors import OpError, os_error

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Iterator, List, Optional, Tuple

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


def owner_of_dir(place: confined.Place) -> Tuple[int, int]:
    st = os.fstat(place.dir_fd)
    return st.st_uid, st.st_gid


def chown_tree(path: str, uid: int, gid: int) -> None:
    os.lchown(path, uid, gid)
    if os.path.isdir(path) and not os.path.islink(path):
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                os.lchown(os.path.join(root, name), uid, gid)


def _placed(path: str) -> str:
    """`path` with its parent resolved (the last component itself is not followed)."""
    return os.path.join(os.path.realpath(os.path.dirname(path) or "/"), os.path.basename(path.rstrip("/")))


def refuse_mount_point(path: str, shown: str, verb: str) -> None:
    if os.path.realpath(path) == "/" or (os.path.isdir(path) and not os.path.islink(path) and os.path.ismount(path)):
        raise OpError("INVALID_REQUEST", "%s is a mount point: it cannot be %s" % (shown, verb), path=shown)


def refuse_into_itself(source: confined.Place, destination: confined.Place, verb: str) -> None:
    """Copying or moving something onto itself or into itself is the caller's mistake."""
    src, dst = _placed(source.path), _placed(destination.path)
    same = os.path.lexists(destination.path) and os.path.samestat(os.lstat(source.path), os.lstat(destination.path))
    if same or dst == src or dst.startswith(src.rstrip("/") + "/"):
        raise OpError("INVALID_REQUEST", "cannot %s %s onto or into itself" % (verb, source.shown), path=source.shown)


def target_for(source: str, destination: str, follow_last: bool = False) -> confined.Place:
    """Like cp and mv: an existing directory as destination receives the source inside it."""
    place = confined.resolve(destination, follow_last)
    st = place.lstat() if place.name else os.fstat(place.dir_fd)
    if st is not None and stat.S_ISDIR(st.st_mode):
        place.close()
        return confined.resolve(destination.rstrip("/") + "/" + os.path.basename(source.rstrip("/")), follow_last)
    return place


@contextlib.contextmanager
def naming(shown: str) -> Iterator[None]:
    """OSErrors about descriptor paths (/proc/self/fd/N/...) told with the caller's path."""
    try:
        yield
    except OSError as exc:
        raise os_error(exc, shown) from None


# --------------------------------------------------------------------------- agent


# ---------------------------------------------------------------- operations


# Metadata, like contents, is reached through links only with their owners' authority (the
# walk checks that each owner may pass every directory after its link): a user's link to
# /root lists, stats or finds nothing there.


def op_stat(stream: Stream, request: Dict[str, Any]) -> None:
    path = request["path"]
    with confined.resolve(path) as place:
        st = os.lstat(place.path) if place.name else os.fstat(place.dir_fd)
    stream.finish(ops.ok(info=file_info(path, st)))


def op_exists(stream: Stream, request: Dict[str, Any]) -> None:
    try:
        with confined.resolve(request["path"]) as place:
            exists = not place.name or os.path.lexists(place.path)
    except OSError:  # as os.path.lexists: a path that cannot be reached does not exist
        exists = False
    stream.finish(ops.ok(exists=exists))


def op_list(stream: Stream, request: Dict[str, Any]) -> None:
    """ready(), then one JSON line per entry (sorted by name) as data frames, then end().

    Data frames are under flow control, so a client that reads a long listing slowly holds
    up this thread, never a growing buffer on the host."""
    path = request["path"]
    with confined.resolve(path, follow_last=True) as place:
        place.check_read()
        found: List[Tuple[str, os.stat_result]] = []
        with os.scandir(place.path) as scan:  # stat while the directory's descriptor is open
            for entry in scan:
                try:
                    found.append((entry.name, entry.stat(follow_symlinks=False)))
                except FileNotFoundError:
                    continue  # removed while we listed
    found.sort(key=lambda item: item[0])
    stream.send(ops.ready())
    lines: List[bytes] = []
    size = 0
    for name, st in found:
        info = file_info(os.path.join(path, name), st)
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


# Write-like operations resolve their paths with confined.resolve: a symlink lends them only
# its owner's authority (confined.py). The names below are the caller's, for messages; the
# operations themselves go through the descriptors the walk holds.


def op_mkdir(stream: Stream, request: Dict[str, Any]) -> None:
    path = request["path"]
    if request.get("recursive"):
        with confined.directory(path) as made:
            info = file_info(path, os.fstat(made.dir_fd))
    else:
        with confined.resolve(path) as place:
            place.check_change()
            os.mkdir(place.path, 0o755)
            uid, gid = owner_of_dir(place)
            os.lchown(place.path, uid, gid)
            info = file_info(path, os.lstat(place.path))
    stream.finish(ops.ok(info=info))


def op_remove(stream: Stream, request: Dict[str, Any]) -> None:
    path = request["path"]
    with confined.resolve(path) as place:
        st = os.lstat(place.path)
        refuse_mount_point(place.path, path, "deleted")
        place.check_change()
        if stat.S_ISDIR(st.st_mode):
            if request.get("recursive"):
                shutil.rmtree(place.path)
            else:
                os.rmdir(place.path)
        else:
            os.unlink(place.path)
    stream.finish(ops.ok())


def op_move(stream: Stream, request: Dict[str, Any]) -> None:
    source, destination = request["source"], request["destination"]
    with naming(source):
        src = confined.resolve(source)
    with src:
        with naming(source):
            os.lstat(src.path)
            refuse_mount_point(src.path, source, "moved")
        with naming(destination):
            dst = target_for(source, destination)
        with dst, naming(source):
            refuse_into_itself(src, dst, "move")
            src.check_change()
            dst.check_change()
            try:
                os.rename(src.path, dst.path)
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                shutil.move(src.path, dst.path)
            info = file_info(dst.shown, os.lstat(dst.path))
    stream.finish(ops.ok(info=info))


def op_copy(stream: Stream, request: Dict[str, Any]) -> None:
    source, destination = request["source"], request["destination"]
    with naming(source):
        src = confined.resolve(source)
    with src, naming(source):
        st = os.lstat(src.path)
        if not stat.S_ISLNK(st.st_mode):  # a link is copied as a link
            src.check_read(tree=stat.S_ISDIR(st.st_mode))
        with naming(destination):
            # Like cp, a destination that is a link is written through: as its owner allows.
            dst = target_for(source, destination, follow_last=True)
        with dst:
            refuse_into_itself(src, dst, "copy")
            dst.check_change()
            uid, gid = owner_of_dir(dst)
            if stat.S_ISDIR(st.st_mode):
                if not request.get("recursive", True):
                    raise OpError("IS_A_DIRECTORY", "%s is a directory" % source, path=source)
                copy_tree(src.path, dst.path, source)
            elif stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
                # Into a new name, then renamed over the target: never through a link
                # that appears at the target meanwhile.
                temp = dst.parent + "/.ws-copy-" + os.urandom(8).hex()
                try:
                    shutil.copy2(src.path, temp, follow_symlinks=False)
                    os.rename(temp, dst.path)
                except BaseException:
                    with contextlib.suppress(OSError):
                        os.unlink(temp)
                    raise
            else:
                raise OpError("INVALID_REQUEST", "%s is not a regular file" % source, path=source)
            chown_tree(dst.path, uid, gid)
            info = file_info(dst.shown, os.lstat(dst.path))
    stream.finish(ops.ok(info=info))


def copy_tree(source_path: str, destination_path: str, source: str) -> None:
    try:
        shutil.copytree(source_path, destination_path, symlinks=True)
    except shutil.Error as exc:  # one entry per file that failed: name the first, count the rest
        failures = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        first = failures[0] if failures else ("", "", str(exc))
        raise OpError(
            "PERMISSION_DENIED",
            "%d files of %s could not be copied; the first: %s: %s" % (len(failures), source, first[0], first[2]),
            path=source,
        ) from None


def op_read(stream: Stream, request: Dict[str, Any]) -> None:
    path = request["path"]
    with confined.resolve(path, follow_last=True) as place:  # links lend their owner's authority
        check_regular(os.stat(place.path), path)  # sockets, devices and fifos: refused before open
        place.check_read()
        # O_NONBLOCK: should a fifo appear in the meantime, opening it must not hang.
        fd = os.open(place.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
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
    try:
        place = confined.resolve(path)
    except FileNotFoundError:  # parents are made, owned like the directory that holds them
        confined.directory(os.path.dirname(path) or "/").close()
        place = confined.resolve(path)
    with place:
        if not place.name:
            raise OpError("IS_A_DIRECTORY", "%s is a directory" % path, path=path)
        existing = place.lstat()
        if existing is not None and stat.S_ISDIR(existing.st_mode):
            raise OpError("IS_A_DIRECTORY", "%s is a directory" % path, path=path)
        if existing is not None and not (stat.S_ISREG(existing.st_mode) or stat.S_ISLNK(existing.st_mode)):
            raise OpError("INVALID_REQUEST", "%s is not a regular file" % path, path=path)
        place.check_change()
        # A link at the path itself is replaced by the file (the rename does not follow it).
        mode = stat.S_IMODE(existing.st_mode) if existing is not None and stat.S_ISREG(existing.st_mode) else 0o644
        uid, gid = owner_of_dir(place)
        temp = ".ws-upload-" + os.urandom(8).hex()
        fd = os.open(
            temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=place.dir_fd
        )
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
            os.rename(temp, place.name, src_dir_fd=place.dir_fd, dst_dir_fd=place.dir_fd)
            completed = True
        finally:
            if fd >= 0:
                os.close(fd)
            if not completed:
                try:
                    os.unlink(temp, dir_fd=place.dir_fd)
                except OSError:
                    pass
        info = file_info(path, os.lstat(place.path))
    stream.finish(ops.ok(info=info))
