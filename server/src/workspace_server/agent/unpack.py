"""A build step's COPY/ADD: a tar the host made from the build context, unpacked as root
inside the sandbox's own root, owners and modes as the tar says (the host set them from
--chown). Paths resolve inside the sandbox, so a link in the image can only lead to another
place of the sandbox, as it would for any command there. Unlike the files API
(confined.py), no other principal is involved: a build step's sandbox runs no process but
this agent, and every earlier layer came from the same Containerfile, whose RUN steps
could write anywhere as root; a link as the last component is replaced, never followed.

Standard library only (runs inside sandboxes)."""

from __future__ import annotations

import os
import stat
import tarfile

from . import ops
from .errors import OpError
from .files import file_info

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict

    from .link import Stream


class _Closed(Exception):
    """The host went away before the end of the tar."""


class InboxReader:
    """The host's data frames as a file object tarfile can read in stream mode."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.buffer = bytearray()
        self.ended = False

    def read(self, size: int = -1) -> bytes:
        while not self.ended and (size < 0 or len(self.buffer) < size):
            what, value = self.stream.inbox.get()
            if what == "data":
                self.buffer += value
                self.stream.grant(len(value))
            elif what == "msg" and value.get("type") == ops.EOF:
                self.ended = True
            elif what == "closed":
                raise _Closed()
        if size < 0:
            size = len(self.buffer)
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data


def _make_parents(path: str) -> None:
    missing = []
    current = os.path.dirname(path)
    while current and not os.path.isdir(current):
        if os.path.lexists(current) and not os.path.isdir(current):
            raise OpError("NOT_A_DIRECTORY", "%s is not a directory" % current, path=current)
        missing.append(current)
        current = os.path.dirname(current)
    for directory in reversed(missing):
        os.mkdir(directory, 0o755)


def _replace(path: str) -> None:
    """Make room for a new file or link (a directory in its way stays: tar semantics)."""
    if os.path.lexists(path) and not (os.path.isdir(path) and not os.path.islink(path)):
        os.unlink(path)


def _apply(root: str, member: tarfile.TarInfo, archive: tarfile.TarFile) -> None:
    name = os.path.normpath(member.name)
    if member.name.startswith("/") or name == ".." or name.startswith("../"):
        raise OpError("INVALID_REQUEST", "unsafe entry %r" % member.name)
    path = root if name == "." else os.path.join(root, name)
    _make_parents(path)
    if member.isdir():
        if not os.path.isdir(path):
            _replace(path)
            os.mkdir(path, 0o700)
        else:
            return  # an existing directory keeps its owner and mode, as in the engines
    elif member.isreg():
        _replace(path)
        source = archive.extractfile(member)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            while source is not None:
                chunk = source.read(1 << 20)
                if not chunk:
                    break
                out.write(chunk)
    elif member.issym():
        _replace(path)
        os.symlink(member.linkname, path)
    else:
        raise OpError("INVALID_REQUEST", "entry %r is not a file, directory or symlink" % member.name)
    os.lchown(path, member.uid, member.gid)
    if not member.issym():
        os.chmod(path, stat.S_IMODE(member.mode))
        os.utime(path, (member.mtime, member.mtime))


def op_unpack(stream: Stream, request: Dict[str, Any]) -> None:
    root = request["path"]
    _make_parents(os.path.join(root, "x"))
    stream.send(ops.ready())
    reader = InboxReader(stream)
    count = 0
    try:
        with tarfile.open(fileobj=reader, mode="r|") as archive:  # type: ignore[call-overload]
            for member in archive:
                _apply(root, member, archive)
                count += 1
        reader.read()  # up to the host's eof
    except _Closed:
        return
    except tarfile.TarError as exc:
        raise OpError("INVALID_REQUEST", "the tar stream is unreadable: %s" % exc) from None
    stream.finish(ops.ok(entries=count, info=file_info(root)))
