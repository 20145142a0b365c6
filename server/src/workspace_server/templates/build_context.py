"""A build's context: the uploaded tar unpacked into a private dir (nothing outside it, no
link leading out of it, no device), and what one COPY or ADD takes from it: a tar of those
files as they land at the destination, and a digest of their names, modes and contents
(the step cache's key; mtimes are not part of it, as in the engines)."""

from __future__ import annotations

import glob
import hashlib
import os
import posixpath
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from workspace_server.domain.containerfile import Step
from workspace_server.domain.errors import DISK_FULL, InvalidRequest
from workspace_server.templates.room import Room, RoomMeter

CHUNK = 1 << 20
# A Containerfile the client sent beside the context (not one of its files) is named so.
SENT_CONTAINERFILE_PREFIX = ".workspace-containerfile"
DEFAULT_CONTAINERFILES = ("Containerfile", "Dockerfile")


def _refuse(message: str, **details: str) -> InvalidRequest:
    return InvalidRequest(message, field="context", **details)


def unpack_context(archive: Path, target: Path, max_bytes: int, room: Room | None = None) -> None:
    """Unpack the uploaded context (a tar, optionally gzip-compressed) into `target`; `room`
    admits its files to the data dir's free space before they are written (a small
    compressed context may unpack to far more than it weighs)."""
    total = 0
    meter = RoomMeter(room)

    def checked(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        nonlocal total
        if member.name.startswith("/"):  # the filter would strip the slash: say it instead
            raise _refuse(f"the build context holds an unsafe entry: {member.name!r} is an absolute path")
        try:
            member = tarfile.data_filter(member, path)  # no '..', absolute paths, outside links, devices
        except tarfile.FilterError as exc:
            raise _refuse(f"the build context holds an unsafe entry: {exc}", entry=member.name[:256]) from None
        total += member.size
        if total > max_bytes:
            raise _refuse(f"the build context unpacks to more than {max_bytes} bytes")
        meter.grow_to(total)
        return member

    target.mkdir(mode=0o700)
    try:
        with tarfile.open(archive, mode="r:*") as context:
            context.extractall(target, filter=checked)
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            raise  # the server's disk, not the archive: RESOURCE_EXHAUSTED
        if isinstance(exc, tarfile.FilterError):
            raise _refuse(f"the build context holds an unsafe entry: {exc}") from None
        raise _refuse(f"the build context is not a readable tar archive: {exc}") from None


def read_containerfile(context: Path, name: str | None) -> str:
    """The Containerfile: `name` in the context (one the client sent beside it is removed
    from the context), else Containerfile or Dockerfile."""
    candidates = [name] if name else list(DEFAULT_CONTAINERFILES)
    for candidate in candidates:
        relative = posixpath.normpath(candidate.lstrip("/"))
        if relative.startswith(".."):
            raise InvalidRequest(f"the Containerfile {candidate!r} lies outside the build context", field="file")
        path = context / relative
        if path.is_file() and not path.is_symlink():
            if path.stat().st_size > 1 << 20:
                raise InvalidRequest("the Containerfile is over 1 MiB", field="file")
            text = path.read_text(errors="replace")
            if relative.startswith(SENT_CONTAINERFILE_PREFIX):
                path.unlink()
            return text
    raise InvalidRequest(f"no {' or '.join(candidates)} in the build context", field="file")


@dataclass
class CopyEntry:
    name: str  # relative to the copy's target dir
    source: Path | None  # a file in the context (None: a directory, link or archive member)
    kind: bytes  # tarfile.REGTYPE, DIRTYPE or SYMTYPE
    mode: int
    size: int = 0
    link: str = ""
    archive: Path | None = None  # the member comes from this ADD archive
    member: str = ""
    uid: int | None = None  # an archive member's own owner (None: the copy's)
    gid: int | None = None


@dataclass
class CopyPlan:
    target_dir: str  # absolute, in the sandbox
    entries: list[CopyEntry] = field(default_factory=list)
    digest: str = ""


def plan_copy(context: Path, step: Step, max_bytes: int) -> CopyPlan:
    """What the COPY/ADD step takes from the context, and where it lands; at most
    `max_bytes` of file content (an ADD archive may unpack to far more than it weighs)."""
    into_dir = step.destination.endswith("/")
    destination = step.destination.rstrip("/") or "/"
    matched: list[tuple[str, Path]] = []
    for source in step.sources:
        if glob.has_magic(source):
            found = sorted(glob.glob(source, root_dir=context, include_hidden=True))
            if not found:
                raise _line(step, f"no file in the build context matches {source!r}")
            matched += [(name, context / name) for name in found]
        else:
            path = context / source if source != "." else context
            if not os.path.lexists(path):
                raise _line(step, f"{source!r} is not in the build context")
            matched.append((source, path))
    if len(matched) > 1:
        into_dir = True
    plan = CopyPlan(target_dir=destination if into_dir else (posixpath.dirname(destination) or "/"))
    for name, path in matched:
        real = Path(os.path.realpath(path))
        if real != context.resolve() and context.resolve() not in real.parents:
            raise _line(step, f"{name!r} leads out of the build context")
        if real.is_dir():  # its contents go into the destination
            plan.target_dir = destination
            _walk(real, "", plan)
        elif step.extract_archives and _is_archive(real):
            _archive_entries(real, plan, step)
        elif real.is_file():
            target = posixpath.basename(name) if into_dir else posixpath.basename(destination)
            info = os.stat(real)
            plan.entries.append(CopyEntry(target, real, tarfile.REGTYPE, stat.S_IMODE(info.st_mode), info.st_size))
        else:
            raise _line(step, f"{name!r} is neither a file nor a directory")
    total = sum(entry.size for entry in plan.entries)
    if total > max_bytes:
        raise _line(step, f"{step.text.split()[0]} would copy {total} bytes, over the maximum of {max_bytes}")
    plan.digest = _digest(plan)
    return plan


def _line(step: Step, message: str) -> InvalidRequest:
    return InvalidRequest(f"Containerfile line {step.line}: {message}", field="containerfile", line=step.line)


def _walk(root: Path, prefix: str, plan: CopyPlan) -> None:
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        relative = os.path.relpath(directory, root)
        for name in sorted(dirs + files):
            path = Path(directory) / name
            entry_name = posixpath.normpath(posixpath.join(prefix, relative, name))
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                plan.entries.append(CopyEntry(entry_name, None, tarfile.SYMTYPE, 0o777, link=os.readlink(path)))
            elif stat.S_ISDIR(info.st_mode):
                plan.entries.append(CopyEntry(entry_name, None, tarfile.DIRTYPE, stat.S_IMODE(info.st_mode)))
            elif stat.S_ISREG(info.st_mode):
                plan.entries.append(
                    CopyEntry(entry_name, path, tarfile.REGTYPE, stat.S_IMODE(info.st_mode), info.st_size)
                )


def _is_archive(path: Path) -> bool:
    try:
        return path.is_file() and tarfile.is_tarfile(path)
    except OSError:
        return False


def _archive_entries(archive: Path, plan: CopyPlan, step: Step) -> None:
    """ADD of a local tar: its members land under the destination dir, their owners kept."""
    plan.target_dir = step.destination.rstrip("/") or "/"
    try:
        with tarfile.open(archive, mode="r:*") as source:
            for member in source:
                name = posixpath.normpath(member.name)
                if member.name.startswith("/") or name == ".." or name.startswith("../"):
                    raise _line(step, f"the archive {archive.name!r} holds an unsafe path {member.name!r}")
                if name == ".":
                    continue
                kinds = {
                    tarfile.REGTYPE: member.isreg(),
                    tarfile.DIRTYPE: member.isdir(),
                    tarfile.SYMTYPE: member.issym(),
                }
                kind = next((k for k, yes in kinds.items() if yes), None)
                if kind is None:
                    raise _line(step, f"the archive {archive.name!r} holds {member.name!r}, not a file, dir or symlink")
                plan.entries.append(
                    CopyEntry(
                        name,
                        None,
                        kind,
                        member.mode & 0o7777,
                        member.size if member.isreg() else 0,
                        link=member.linkname,
                        archive=archive,
                        member=member.name,
                        uid=member.uid if 0 <= member.uid <= 65535 else 0,
                        gid=member.gid if 0 <= member.gid <= 65535 else 0,
                    )
                )
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _line(step, f"the archive {archive.name!r} cannot be read: {exc}") from None


def _digest(plan: CopyPlan) -> str:
    """Names, modes, owners and contents: not where the context was unpacked, not mtimes."""
    digest = hashlib.sha256(plan.target_dir.encode())
    archives: dict[Path, str] = {}
    for entry in plan.entries:
        digest.update(
            f"\0{entry.name}\0{entry.kind!r}\0{entry.mode:o}\0{entry.link}\0{entry.uid}\0{entry.gid}\0".encode()
        )
        if entry.source is not None:
            digest.update(_file_digest(entry.source).encode())
        elif entry.archive is not None:
            if entry.archive not in archives:
                archives[entry.archive] = _file_digest(entry.archive)
            digest.update(f"{archives[entry.archive]}:{entry.member}:{entry.size}".encode())
    return "sha256:" + digest.hexdigest()


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while chunk := data.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_copy_tar(plan: CopyPlan, out: BinaryIO, owner: tuple[int, int] | None) -> None:
    """The step's files as a tar relative to `plan.target_dir`, owned by `owner` (--chown)
    or root; members of an ADD archive keep their own owners unless --chown was given."""
    archives: dict[Path, tarfile.TarFile] = {}
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as archive:
            for entry in plan.entries:
                info = tarfile.TarInfo(entry.name)
                info.type, info.mode, info.size, info.linkname = entry.kind, entry.mode, entry.size, entry.link
                if owner is not None:
                    info.uid, info.gid = owner
                else:
                    info.uid, info.gid = entry.uid or 0, entry.gid or 0
                if entry.source is not None:
                    with open(entry.source, "rb") as data:
                        archive.addfile(info, data)
                elif entry.archive is not None and entry.kind == tarfile.REGTYPE:
                    source = archives.get(entry.archive)
                    if source is None:
                        source = archives[entry.archive] = tarfile.open(entry.archive, mode="r:*")
                    archive.addfile(info, source.extractfile(entry.member))
                else:
                    info.size = 0
                    archive.addfile(info)
    finally:
        for source in archives.values():
            source.close()
