"""Blank disk images: a formatted, empty ext4 image per disk size, that each new sandbox
disk is a sparse copy of (a copy costs ~3 ms, mkfs ~10 ms).

Bounded: the images of the few sizes used last are kept (KEEP), others are removed once no
copy reads them, so a client asking for many distinct disk_mb cannot leave one image per
size in the data dir. None survives a restart (check() sweeps them).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator
from pathlib import Path

from workspace_server.domain.errors import RuntimeFailure
from workspace_server.runtimes.host_commands import run_host_command

KEEP = 4
PREFIX = "blank-disk-"


class BlankDisks:
    def __init__(self, directory: Path, keep: int = KEEP) -> None:
        self.directory = directory
        self.keep = keep
        self._lock = asyncio.Lock()
        self._recent: OrderedDict[int, None] = OrderedDict()  # sizes made, least recently used first
        self._readers: dict[int, int] = {}

    def path(self, size_mb: int) -> Path:
        return self.directory / f"{PREFIX}{size_mb}m.img"

    def sweep(self) -> None:
        """At start: images (and half-made ones) a previous server left."""
        for stale in self.directory.glob(f"{PREFIX}*"):
            stale.unlink(missing_ok=True)

    def cached(self) -> list[Path]:
        return sorted(self.directory.glob(f"{PREFIX}*"))

    @contextlib.asynccontextmanager
    async def use(self, size_mb: int) -> AsyncIterator[Path]:
        """The blank image of `size_mb`, kept while the caller copies it."""
        self._readers[size_mb] = self._readers.get(size_mb, 0) + 1
        try:
            blank = await self._get(size_mb)
            yield blank
        finally:
            self._readers[size_mb] -= 1
            if not self._readers[size_mb]:
                del self._readers[size_mb]
            self._trim()

    async def _get(self, size_mb: int) -> Path:
        blank = self.path(size_mb)
        async with self._lock:
            self._recent[size_mb] = None
            self._recent.move_to_end(size_mb)
            if blank.exists():
                return blank
            partial = blank.with_suffix(".partial")
            with open(partial, "wb") as handle:
                handle.truncate(size_mb * 1024 * 1024)
            code, out = await run_host_command(  # root dir owned by host root: each sandbox chowns its copy
                "mkfs.ext4",
                "-q",
                "-F",
                "-m",
                "0",
                "-O",
                # csum_seed: a copy's UUID can then change without rewriting every checksum
                "^has_journal,metadata_csum_seed",
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0",
                str(partial),
            )
            if code != 0:
                partial.unlink(missing_ok=True)
                self._recent.pop(size_mb, None)
                raise RuntimeFailure(f"could not make the sandbox's disk: {out}")
            partial.rename(blank)  # atomic: a half-made image is never used
        return blank

    def _trim(self) -> None:
        """Remove the least recently used images beyond KEEP that nobody is copying."""
        excess = len(self._recent) - self.keep
        for size_mb in list(self._recent):
            if excess <= 0:
                break
            if size_mb in self._readers:
                continue
            self.path(size_mb).unlink(missing_ok=True)
            del self._recent[size_mb]
            excess -= 1
