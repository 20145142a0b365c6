"""A background process's output log: the most recent bytes of its stdout and stderr, on disk.

Standard library only: this file runs inside sandboxes (see wire.py).

Output is addressed by offset: offset N is the N-th byte the process wrote to stdout and
stderr together, in the order the agent read them. One file holds both:

    [ run table: RUN_SLOTS entries of 8 bytes ][ data ring: CAPACITY bytes ]

The data ring keeps the last CAPACITY bytes (byte N lives at N % CAPACITY). The run table
says which stream each byte came from: an entry `start << 1 | stream` is written whenever
the stream changes, into slot `run % RUN_SLOTS`. Both are rings, so disk use is bounded and
memory holds only a few counters, however much a process writes.

One writer (the agent's output pump) and any number of readers (followers). The writer
publishes the new `start` (first offset still kept) before it overwrites anything, and
the new `end` after it wrote; a reader checks `start` after each read, so a read that raced
an overwrite is detected and reported as dropped, never delivered corrupted.
"""

from __future__ import annotations

import os
import struct
import threading

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional, Tuple

STDOUT = 0
STDERR = 1
RUN = struct.Struct("<Q")
MIN_CAPACITY = 64 * 1024
MAX_CAPACITY = 1 << 30


class Dropped(Exception):
    """The bytes asked for are no longer kept; `start` is the first offset that is."""

    def __init__(self, start: int) -> None:
        super().__init__(start)
        self.start = start


def run_slots_for(capacity: int) -> int:
    # An average run of 64 bytes (stdout and stderr interleaved line by line) still keeps the
    # whole data ring attributable; shorter runs shrink the kept window instead.
    return max(1024, capacity // 64)


class OutputLog:
    def __init__(self, path: str, capacity: int) -> None:
        if not MIN_CAPACITY <= capacity <= MAX_CAPACITY:
            raise ValueError("log capacity out of range")
        self.path = path
        self.capacity = capacity
        self.run_slots = run_slots_for(capacity)
        self._data_base = self.run_slots * RUN.size
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        self.start = 0  # first offset still kept (published before an overwrite)
        self.end = 0  # offset of the next byte (published after a write)
        self.runs = 0  # run entries written
        self._last_stream = -1
        self.finished = False  # no more output will come
        self.changed = threading.Condition()

    # ---------------------------------------------------------------- writer
    def append(self, stream: int, data: bytes) -> None:
        """Add output (the single writer only). A write the disk refuses (full) loses the
        log's history: everything before the new end counts as dropped."""
        view = memoryview(data)
        step = self.capacity // 2
        while view:
            piece, view = view[:step], view[step:]
            try:
                self._append(stream, piece)
            except OSError:
                with self.changed:
                    self.end += len(piece)
                    self.start = self.end
                    self._last_stream = -1  # the next byte starts a fresh run
                    self.changed.notify_all()

    def _append(self, stream: int, piece: memoryview) -> None:
        size = len(piece)
        new_end = self.end + size
        new_run = stream != self._last_stream
        floor = max(self.start, new_end - self.capacity)
        if new_run and self.runs >= self.run_slots:
            # The slot we are about to reuse holds the oldest run: what it described loses
            # its stream, so the kept window starts at the next run.
            floor = max(floor, self._run_start(self.runs - self.run_slots + 1))
        if floor != self.start:
            with self.changed:
                self.start = floor
        if new_run:
            os.pwrite(self._fd, RUN.pack(self.end << 1 | stream), (self.runs % self.run_slots) * RUN.size)
            self.runs += 1
            self._last_stream = stream
        position = self.end % self.capacity
        first = min(size, self.capacity - position)
        self._write_all(piece[:first], self._data_base + position)
        if first < size:
            self._write_all(piece[first:], self._data_base)
        with self.changed:
            self.end = new_end
            self.changed.notify_all()

    def _write_all(self, data: memoryview, position: int) -> None:
        while data:
            written = os.pwrite(self._fd, data, position)
            data, position = data[written:], position + written

    def finish(self) -> None:
        with self.changed:
            self.finished = True
            self.changed.notify_all()

    # ---------------------------------------------------------------- readers
    def _run_entry(self, index: int) -> Tuple[int, int]:
        raw = os.pread(self._fd, RUN.size, (index % self.run_slots) * RUN.size)
        if len(raw) != RUN.size:
            raise Dropped(self.start)
        value = RUN.unpack(raw)[0]
        return value >> 1, value & 1

    def _run_start(self, index: int) -> int:
        return self._run_entry(index)[0]

    def _find_run(self, offset: int) -> int:
        """Index of the run holding `offset` (binary search over the live run entries)."""
        low = max(0, self.runs - self.run_slots)
        high = self.runs - 1
        while low < high:
            middle = (low + high + 1) // 2
            if self._run_start(middle) <= offset:
                low = middle
            else:
                high = middle - 1
        return low

    def read(self, offset: int, limit: int, run_hint: int = -1) -> Tuple[int, bytes, int]:
        """Up to `limit` bytes from `offset`, all of one stream: (stream, data, run index).

        Empty data when `offset` is at the end. Raises Dropped if `offset` is no longer
        kept (before or during the read). Pass the run index back as `run_hint` to read on
        sequentially without a search."""
        end = self.end
        if offset < self.start:
            raise Dropped(self.start)
        if offset >= end or self.runs == 0:
            return STDOUT, b"", run_hint
        live = max(0, self.runs - self.run_slots)
        if run_hint < live or run_hint >= self.runs:
            run = self._find_run(offset)
        else:
            run = run_hint
            while run + 1 < self.runs and self._run_start(run + 1) <= offset:
                run += 1
        run_start, stream = self._run_entry(run)
        run_end = self._run_start(run + 1) if run + 1 < self.runs else end
        stop = min(end, run_end, offset + limit)
        if run_start > offset or stop <= offset:
            raise Dropped(self.start)  # the run table moved under us
        data = self._read_range(offset, stop)
        if offset < self.start:  # overwritten while we read
            raise Dropped(self.start)
        return stream, data, run

    def _read_range(self, begin: int, stop: int) -> bytes:
        position = begin % self.capacity
        size = stop - begin
        first = min(size, self.capacity - position)
        data = os.pread(self._fd, first, self._data_base + position)
        if first < size:
            data += os.pread(self._fd, size - first, self._data_base)
        return data

    def wait(self, offset: int, timeout: Optional[float]) -> bool:
        """Wait until there is output at `offset` or the log is finished; True if so."""
        with self.changed:
            if self.end <= offset and not self.finished:
                self.changed.wait(timeout)
            return self.end > offset or self.finished

    def close(self, remove: bool = True) -> None:
        try:
            os.close(self._fd)
        except OSError:
            pass
        if remove:
            try:
                os.unlink(self.path)
            except OSError:
                pass
