"""Host uid ranges: every sandbox gets one of its own.

Root inside a sandbox is the first host uid of its range and the sandbox user is that plus
1000; the range is 65536 long, so programs can chown to any uid they expect. With one range
shared by all sandboxes, a process that escaped its sandbox's namespaces (a kernel bug)
would be the very uid of every other sandbox's processes, free to signal, trace and read
them. With a range each, it is a stranger to them as well.

A range is taken when a sandbox starts and given back when it is destroyed; after a server
restart the ranges of surviving sandboxes are read back from their bundles.
"""

from __future__ import annotations

from workspace_server.domain.errors import ResourceExhausted

FIRST_HOST_UID = 100000
RANGE_SIZE = 65536
RANGES = 16384  # the last ends near host uid 1.07e9, well inside 32 bits


def range_start(index: int) -> int:
    return FIRST_HOST_UID + index * RANGE_SIZE


def range_index(start: int) -> int | None:
    """Which range begins at host uid `start`; None if none does."""
    index, offset = divmod(start - FIRST_HOST_UID, RANGE_SIZE)
    return index if offset == 0 and 0 <= index < RANGES else None


class UidRanges:
    """Which sandbox holds which range (in memory; rebuilt from the bundles on start)."""

    def __init__(self) -> None:
        self._held: dict[str, int] = {}  # sandbox id -> range index

    def take(self, sandbox_id: str) -> int:
        """The first host uid of a free range, now held by `sandbox_id` (the lowest free one)."""
        if sandbox_id in self._held:
            return range_start(self._held[sandbox_id])
        held = set(self._held.values())
        index = next((i for i in range(RANGES) if i not in held), None)
        if index is None:
            raise ResourceExhausted(f"all {RANGES} host uid ranges are in use")
        self._held[sandbox_id] = index
        return range_start(index)

    def adopt(self, sandbox_id: str, start: int) -> None:
        """Record the range an existing sandbox was started with (a server restart)."""
        index = range_index(start)
        if index is not None:
            self._held[sandbox_id] = index

    def start_of(self, sandbox_id: str) -> int | None:
        """The first host uid of the sandbox's range, if it holds one."""
        index = self._held.get(sandbox_id)
        return range_start(index) if index is not None else None

    def give_back(self, sandbox_id: str) -> None:
        self._held.pop(sandbox_id, None)
