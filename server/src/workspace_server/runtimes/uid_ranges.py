"""Host uid ranges: every sandbox gets one of its own.

Root inside a sandbox is the first host uid of its range and the sandbox user is that plus
1000; the range is 65536 long, so programs can chown to any uid they expect. With one range
shared by all sandboxes, a process that escaped its sandbox's namespaces (a kernel bug)
would be the very uid of every other sandbox's processes, free to signal, trace and read
them. With a range each, it is a stranger to them as well.

A range is taken when a sandbox starts and given back when it is destroyed; after a server
restart the ranges of surviving sandboxes are read back from their bundles. Ranges are
claimed host-wide in a registry under /run (HOST_REGISTRY), so two servers on one host
never share one.
"""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path

from workspace_server.domain.errors import ResourceExhausted

FIRST_HOST_UID = 100000
RANGE_SIZE = 65536
RANGES = 16384  # the last ends near host uid 1.07e9, well inside 32 bits


HOST_REGISTRY = Path("/run/workspace-server/uid-ranges")  # tmpfs: no sandbox outlives a reboot


def range_start(index: int) -> int:
    return FIRST_HOST_UID + index * RANGE_SIZE


def range_index(start: int) -> int | None:
    """Which range begins at host uid `start`; None if none does."""
    index, offset = divmod(start - FIRST_HOST_UID, RANGE_SIZE)
    return index if offset == 0 and 0 <= index < RANGES else None


class UidRanges:
    """Which sandbox holds which range (in memory; rebuilt from the bundles on start).

    With a `registry` directory, ranges are also claimed host-wide, so two servers on one
    host (two data dirs) never hand out the same uids: one file per held range, named by its
    index, holding "<owner> <sandbox id>", written under an exclusive `flock`. A claim whose
    owner no longer has that sandbox's bundle is stale (its server died with it) and is
    taken over."""

    def __init__(self, registry: Path | None = None, owner: Path | None = None) -> None:
        self._held: dict[str, int] = {}  # sandbox id -> range index
        self.registry = registry
        self.owner = owner  # this server's sandboxes dir: a claim names its bundle

    def take(self, sandbox_id: str) -> int:
        """The first host uid of a free range, now held by `sandbox_id` (the lowest free one)."""
        if sandbox_id in self._held:
            return range_start(self._held[sandbox_id])
        with self._locked() as claimed:
            held = set(self._held.values()) | set(claimed)
            index = next((i for i in range(RANGES) if i not in held), None)
            if index is None:
                raise ResourceExhausted(f"all {RANGES} host uid ranges are in use")
            self._claim(index, sandbox_id)
        self._held[sandbox_id] = index
        return range_start(index)

    def adopt(self, sandbox_id: str, start: int) -> None:
        """Record the range an existing sandbox was started with (a server restart)."""
        index = range_index(start)
        if index is None:
            return
        self._held[sandbox_id] = index
        with self._locked() as claimed:
            if claimed.get(index, (None, None))[1] != sandbox_id:
                self._claim(index, sandbox_id)

    def start_of(self, sandbox_id: str) -> int | None:
        """The first host uid of the sandbox's range, if it holds one."""
        index = self._held.get(sandbox_id)
        return range_start(index) if index is not None else None

    def give_back(self, sandbox_id: str) -> None:
        index = self._held.pop(sandbox_id, None)
        if index is None or self.registry is None:
            return
        with self._locked() as claimed:
            if claimed.get(index) == (str(self.owner), sandbox_id):
                (self.registry / str(index)).unlink(missing_ok=True)

    # ------------------------------------------------------------------ the host-wide registry
    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict[int, tuple[str, str]]]:
        """Under the registry's lock: the live claims (index -> (owner, sandbox id))."""
        if self.registry is None:
            yield {}
            return
        self.registry.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.registry / ".lock", "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield self._claims()

    def _claims(self) -> dict[int, tuple[str, str]]:
        assert self.registry is not None
        claims = {}
        for entry in self.registry.iterdir():
            if not entry.name.isdigit():
                continue
            try:
                owner, sandbox_id = entry.read_text().split()
            except (OSError, ValueError):
                continue
            if not (Path(owner) / sandbox_id).exists():  # stale: that server's sandbox is gone
                entry.unlink(missing_ok=True)
                continue
            claims[int(entry.name)] = (owner, sandbox_id)
        return claims

    def _claim(self, index: int, sandbox_id: str) -> None:
        if self.registry is None:
            return
        partial = self.registry / f".{index}.partial"
        partial.write_text(f"{self.owner} {sandbox_id}\n")
        partial.rename(self.registry / str(index))
