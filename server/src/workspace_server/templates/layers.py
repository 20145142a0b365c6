"""Layers as overlayfs wants them: a tar stream (an OCI/docker layer, or a sandbox's changes)
unpacked into a directory where a deleted path is a 0/0 character device and a directory
that hides what lies below carries `trusted.overlay.opaque=y`.

Every archive is hostile input: nothing is ever written outside the layer's directory or
through a link, no device node is made, and the digests of the compressed and the
uncompressed stream are checked before the layer counts. xattrs are never applied (an
`trusted.overlay.*` one could fake a whiteout or a redirect)."""

from __future__ import annotations

import gzip
import hashlib
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO, cast

from workspace_server.domain.errors import ImageTooLarge, InvalidImage
from workspace_server.templates.room import Room, RoomMeter

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
MAX_ID = 65535  # sandboxes map uids 0..65535 (runtimes/uid_ranges.py)
CHUNK = 1 << 20


class HashingReader:
    """Reads through a stream and hashes what passes (sha256)."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data: bytes = self.raw.read(size)
        self.hash.update(data)
        self.count += len(data)
        return data

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.hash.hexdigest()


@dataclass
class UnpackedLayer:
    digest: str  # of the stream as given (compressed or not)
    diff_id: str  # of the uncompressed tar
    size: int  # bytes of file content in the layer


def _clean_name(name: str) -> PurePosixPath | None:
    """The member's path relative to the layer root; None for the root itself."""
    if name.startswith("/"):
        raise InvalidImage("unsafe_path", f"archive entry {name!r} has an absolute path", entry=name[:256])
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise InvalidImage("unsafe_path", f"archive entry {name!r} climbs out with '..'", entry=name[:256])
    return PurePosixPath(*parts) if parts else None


class LayerWriter:
    """Applies tar members to a fresh layer directory, never following a link on the host."""

    def __init__(self, root: Path, max_bytes: int, room: Room | None = None) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.size = 0
        self.room = RoomMeter(room)
        root.mkdir(mode=0o755)

    def _parent(self, relative: PurePosixPath, entry: str) -> Path:
        """The member's parent dir on the host, made as needed; never a link."""
        current = self.root
        for part in relative.parent.parts:
            current = current / part
            try:
                info = os.lstat(current)
            except FileNotFoundError:
                os.mkdir(current, 0o755)
                continue
            if not stat.S_ISDIR(info.st_mode):
                raise InvalidImage(
                    "unsafe_path", f"archive entry {entry!r} lies under a link or a file", entry=entry[:256]
                )
        return current

    def _clear(self, path: Path) -> None:
        """A later entry of the same layer replaces an earlier one (not a directory's contents)."""
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            return
        os.unlink(path)

    def apply(self, member: tarfile.TarInfo, data: IO[bytes] | None) -> None:
        entry = member.name
        relative = _clean_name(entry)
        if relative is None:
            if member.isdir():
                os.chmod(self.root, member.mode & 0o7777)
                os.lchown(self.root, *self._owner(member))
            return
        parent = self._parent(relative, entry)
        name = relative.name
        if name == OPAQUE_MARKER:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
            return
        if name.startswith(WHITEOUT_PREFIX):
            hidden = name[len(WHITEOUT_PREFIX) :]
            if not hidden or hidden in (".", ".."):
                raise InvalidImage("unsafe_path", f"archive entry {entry!r} is a malformed whiteout", entry=entry[:256])
            target = parent / hidden
            self._remove_tree(target)
            os.mknod(target, stat.S_IFCHR | 0o000, os.makedev(0, 0))
            return
        path = parent / name
        uid, gid = self._owner(member)
        if member.isdir():
            try:
                info = os.lstat(path)
                if not stat.S_ISDIR(info.st_mode):
                    os.unlink(path)
                    os.mkdir(path)
            except FileNotFoundError:
                os.mkdir(path)
        elif member.isreg():
            self._clear(path)
            self._write(path, data, member.size)
        elif member.issym():
            self._check_symlink(relative, member.linkname, entry)
            self._clear(path)
            os.symlink(member.linkname, path)
        elif member.islnk():
            source = self._hardlink_source(member.linkname, entry)
            self._clear(path)
            os.link(source, path, follow_symlinks=False)
            return  # the link shares its source's inode: owner and mode are the source's
        elif member.isfifo():
            self._clear(path)
            os.mkfifo(path, 0o600)
        elif member.ischr() or member.isblk():
            raise InvalidImage("device_node", f"archive entry {entry!r} is a device node", entry=entry[:256])
        else:
            raise InvalidImage(
                "unsupported_entry", f"archive entry {entry!r} has an unsupported type", entry=entry[:256]
            )
        os.lchown(path, uid, gid)
        if not member.issym():
            os.chmod(path, member.mode & 0o7777)
        os.utime(path, (member.mtime, member.mtime), follow_symlinks=False)

    def _owner(self, member: tarfile.TarInfo) -> tuple[int, int]:
        if not (0 <= member.uid <= MAX_ID and 0 <= member.gid <= MAX_ID):
            raise InvalidImage(
                "unsupported_entry",
                f"archive entry {member.name!r} is owned by uid/gid {member.uid}/{member.gid}, above {MAX_ID}",
                entry=member.name[:256],
            )
        return member.uid, member.gid

    def _write(self, path: Path, data: IO[bytes] | None, size: int) -> None:
        self.size += size
        if self.size > self.max_bytes:
            raise ImageTooLarge(f"the image unpacks to more than {self.max_bytes} bytes")
        self.room.grow_to(self.size)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            remaining = size
            while data is not None and remaining > 0:
                chunk = data.read(min(CHUNK, remaining))
                if not chunk:
                    raise InvalidImage("corrupt", "the archive ends inside a file")
                out.write(chunk)
                remaining -= len(chunk)

    @staticmethod
    def _check_symlink(relative: PurePosixPath, target: str, entry: str) -> None:
        """An absolute target resolves inside the sandbox's root; a relative one must too."""
        if target.startswith("/"):
            return
        depth = len(relative.parent.parts)
        for part in PurePosixPath(target).parts:
            depth += -1 if part == ".." else (0 if part == "." else 1)
            if depth < 0:
                raise InvalidImage(
                    "unsafe_link", f"archive entry {entry!r} links outside the image ({target!r})", entry=entry[:256]
                )

    def _hardlink_source(self, linkname: str, entry: str) -> Path:
        relative = _clean_name(linkname.lstrip("/") if linkname.startswith("/") else linkname)
        if relative is None:
            raise InvalidImage("unsafe_link", f"archive entry {entry!r} is a hard link to the root", entry=entry[:256])
        parent = self._parent(relative, entry)
        source = parent / relative.name
        try:
            info = os.lstat(source)
        except FileNotFoundError:
            raise InvalidImage(
                "unsafe_link", f"archive entry {entry!r} is a hard link to a missing {linkname!r}", entry=entry[:256]
            ) from None
        if not stat.S_ISREG(info.st_mode):
            raise InvalidImage("unsafe_link", f"archive entry {entry!r} hard-links a non-file", entry=entry[:256])
        return source

    @staticmethod
    def _remove_tree(path: Path) -> None:
        try:
            info = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(info.st_mode):
            for child in list(os.scandir(path)):
                LayerWriter._remove_tree(Path(child.path))
            os.rmdir(path)
        else:
            os.unlink(path)


def _members(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    try:
        yield from archive
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise InvalidImage("corrupt", f"the layer is not a readable tar stream: {exc}") from None


def unpack(
    stream: BinaryIO,
    target: Path,
    *,
    compression: str | None,
    max_bytes: int,
    expect_digest: str | None = None,
    expect_diff_id: str | None = None,
    room: Room | None = None,
) -> UnpackedLayer:
    """Unpack one layer stream into `target` (which must not exist). On any error `target`
    may hold a partial tree: the caller unpacks into a scratch dir and removes it."""
    outer = HashingReader(stream)
    inner = outer  # an uncompressed stream has one digest: hash it once
    if compression == "gzip":
        inner = HashingReader(gzip.GzipFile(fileobj=cast(IO[bytes], outer), mode="rb"))
    writer = LayerWriter(target, max_bytes, room)
    try:
        with tarfile.open(fileobj=inner, mode="r|", bufsize=CHUNK) as archive:  # type: ignore[call-overload]
            for member in _members(archive):
                data = archive.extractfile(member) if member.isreg() else None
                writer.apply(member, data)
        inner.drain()
        outer.drain()
    except (EOFError, zlib.error, gzip.BadGzipFile, tarfile.TarError) as exc:
        raise InvalidImage("corrupt", f"the layer stream is corrupt or truncated: {exc}") from None
    result = UnpackedLayer(outer.digest(), inner.digest(), writer.size)
    if expect_digest is not None and result.digest != expect_digest:
        raise InvalidImage(
            "digest_mismatch",
            f"a layer's digest is {result.digest}, the manifest says {expect_digest}",
            expected=expect_digest,
            actual=result.digest,
        )
    if expect_diff_id is not None and result.diff_id != expect_diff_id:
        raise InvalidImage(
            "digest_mismatch",
            f"a layer's content digest is {result.diff_id}, the image config says {expect_diff_id}",
            expected=expect_diff_id,
            actual=result.diff_id,
        )
    return result


def pack_changes(upper: Path, out: BinaryIO, uid_base: int) -> None:
    """A sandbox's overlay upper dir as a layer tar: overlay whiteouts become `.wh.` entries,
    opaque dirs get `.wh..wh..opq`, and owners go back from the sandbox's host uid range to
    the image's own uids. Links are stored, never followed (the sandbox is frozen meanwhile)."""
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
        _pack_dir(archive, upper, PurePosixPath(), uid_base)


def _shift(host_id: int, uid_base: int) -> int:
    inside = host_id - uid_base
    return inside if 0 <= inside <= MAX_ID else 65534


def _pack_dir(archive: tarfile.TarFile, directory: Path, relative: PurePosixPath, uid_base: int) -> None:
    with os.scandir(directory) as entries:
        children = sorted(entries, key=lambda e: e.name)
    for child in children:
        path = Path(child.path)
        name = relative / child.name
        info = os.lstat(path)
        if stat.S_ISCHR(info.st_mode) and info.st_rdev == os.makedev(0, 0):
            whiteout = tarfile.TarInfo(str(relative / (WHITEOUT_PREFIX + child.name)))
            whiteout.mtime = int(info.st_mtime)
            archive.addfile(whiteout)
            continue
        if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            continue  # sockets, fifos and devices are not content
        member = archive.gettarinfo(str(path), arcname=str(name))
        member.uid, member.gid = _shift(info.st_uid, uid_base), _shift(info.st_gid, uid_base)
        member.uname = member.gname = ""
        if member.isreg():
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as data:
                archive.addfile(member, data)
        else:
            archive.addfile(member)
        if stat.S_ISDIR(info.st_mode):
            try:
                opaque = os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
            except OSError:
                opaque = False
            if opaque:
                marker = tarfile.TarInfo(str(name / OPAQUE_MARKER))
                archive.addfile(marker)
            _pack_dir(archive, path, name, uid_base)
