"""Userspace NFSv4 clients for tests, since this kernel has no NFS client: Debian's
libnfs-utils (nfs-cp, nfs-cat, nfs-ls) to read and list, and tests/support/nfs4.py to write
(bookworm's libnfs fails any NFSv4 WRITE over ~2 KiB). libnfs takes the port as ?nfsport=."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from tests.support.nfs4 import CHUNK, Nfs4Client, NfsError

TIMEOUT = 120


@dataclass(frozen=True)
class NfsResult:
    code: int
    output: str

    @property
    def ok(self) -> bool:
        return self.code == 0


def libnfs_url(nfs_url: str, path: str = "") -> str:
    """nfs://HOST:PORT/sandboxes/ID + path -> libnfs's nfs://HOST/sandboxes/ID/path?version=4&nfsport=PORT."""
    parts = urlsplit(nfs_url)
    assert parts.scheme == "nfs" and parts.hostname and parts.port, nfs_url
    full = parts.path.rstrip("/") + ("/" + path.lstrip("/") if path else "")
    return f"nfs://{parts.hostname}{full or '/'}?version=4&nfsport={parts.port}"


def _run(*argv: str) -> NfsResult:
    done = subprocess.run(argv, capture_output=True, timeout=TIMEOUT, check=False)
    return NfsResult(done.returncode, (done.stdout + done.stderr).decode(errors="replace"))


def put(nfs_url: str, path: str, source: Path, uid: int = 0, gid: int = 0) -> NfsResult:
    """Write `source` to `path` in the export, claiming (uid, gid) in AUTH_SYS."""
    client, export = Nfs4Client.for_url(nfs_url, uid=uid, gid=gid)
    try:
        with client, open(source, "rb") as handle:
            size = client.write_file(f"{export}/{path}", iter(lambda: handle.read(CHUNK), b""))
    except (NfsError, OSError) as exc:
        return NfsResult(1, f"{type(exc).__name__}: {exc}")
    return NfsResult(0, f"copied {size} bytes")


def get(nfs_url: str, path: str, target: Path) -> NfsResult:
    return _run("nfs-cp", libnfs_url(nfs_url, path), str(target))


def cat(nfs_url: str, path: str) -> NfsResult:
    return _run("nfs-cat", libnfs_url(nfs_url, path))


def ls(nfs_url: str, path: str = "") -> NfsResult:
    return _run("nfs-ls", libnfs_url(nfs_url, path))


def names(listing: NfsResult) -> set[str]:
    """The entry names of an nfs-ls listing (its last column)."""
    return {line.split()[-1] for line in listing.output.splitlines() if line.strip() and not line.startswith("Failed")}
