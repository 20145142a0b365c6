"""Read-only directories that every sandbox binds (its /etc, the agent's code).

Running sandboxes keep binding the directory they started with, even across a server
restart, so a directory is never changed in place: each version is published under a
name derived from its content, and old versions are pruned only once no sandbox uses them.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root).as_posix()
        if "__pycache__" in relative:
            continue
        digest.update(relative.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"L" + os.readlink(path).encode())
        elif path.is_file():
            digest.update(b"F" + path.read_bytes())
        digest.update(b"%o\0" % (path.lstat().st_mode & 0o7777))
    return digest.hexdigest()[:16]


def publish(parent: Path, prefix: str, build: Callable[[Path], None]) -> Path:
    """Build into a scratch dir; keep the existing copy if one has the same content. On a
    full file system, the newest copy there is serves (the server must start to free space)."""
    scratch = parent / f".{prefix}-building-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        scratch.mkdir(parents=True)
        build(scratch)
    except OSError as exc:
        shutil.rmtree(scratch, ignore_errors=True)
        existing = sorted(parent.glob(f"{prefix}-*"), key=lambda path: path.stat().st_mtime)
        full = exc.errno in (errno.ENOSPC, errno.EDQUOT) or os.strerror(errno.ENOSPC) in str(exc)  # copytree's
        if not full or not existing:
            raise
        log.warning("no space to build %s/%s-*: the newest one there serves (%s)", parent, prefix, existing[-1].name)
        return existing[-1]
    final = parent / f"{prefix}-{tree_digest(scratch)}"
    if final.exists():
        shutil.rmtree(scratch)
    else:
        scratch.chmod(0o755)
        scratch.rename(final)
    return final


def prune(parent: Path, prefix: str, keep: Iterable[Path]) -> None:
    kept = {path.resolve() for path in keep}
    for candidate in parent.glob(f"{prefix}-*"):
        if candidate.resolve() not in kept:
            shutil.rmtree(candidate, ignore_errors=True)


def sweep_scratch(parent: Path) -> None:
    """At start: build dirs a crashed server left half-made (this one's and image_root's
    base layers are built under a dot name, then renamed)."""
    for scratch in parent.glob(".*"):
        half_made = "-building-" in scratch.name or scratch.name.startswith(".base-")
        if half_made and scratch.is_dir() and not scratch.is_symlink():
            shutil.rmtree(scratch, ignore_errors=True)
