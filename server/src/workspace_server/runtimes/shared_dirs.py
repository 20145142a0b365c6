"""Read-only directories that every sandbox binds (its /etc, the agent's code).

Running sandboxes keep binding the directory they started with, even across a server
restart, so a directory is never changed in place: each version is published under a
name derived from its content, and old versions are pruned only once no sandbox uses them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path


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
    """Build into a scratch dir; keep the existing copy if one has the same content."""
    scratch = parent / f".{prefix}-building-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    build(scratch)
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
