"""The output log of background processes: a ring on disk addressed by output offset."""

from __future__ import annotations

import os
import random
import threading
from pathlib import Path

import pytest

from workspace_server.agent.output_log import MIN_CAPACITY, STDERR, STDOUT, Dropped, OutputLog


def read_all(log: OutputLog, offset: int, limit: int = 10_000) -> list[tuple[int, bytes]]:
    """(stream, bytes) pieces from offset to the end, merging neighbours of one stream."""
    pieces: list[tuple[int, bytes]] = []
    run = -1
    while offset < log.end:
        stream, data, run = log.read(offset, limit, run)
        assert data
        if pieces and pieces[-1][0] == stream:
            pieces[-1] = (stream, pieces[-1][1] + data)
        else:
            pieces.append((stream, data))
        offset += len(data)
    return pieces


def test_streams_and_offsets_round_trip(tmp_path: Path) -> None:
    log = OutputLog(str(tmp_path / "log"), MIN_CAPACITY)
    log.append(STDOUT, b"hello ")
    log.append(STDOUT, b"world\n")
    log.append(STDERR, b"oops\n")
    log.append(STDOUT, b"bye\n")
    assert (log.start, log.end) == (0, 21)
    assert read_all(log, 0) == [(STDOUT, b"hello world\n"), (STDERR, b"oops\n"), (STDOUT, b"bye\n")]
    assert read_all(log, 13) == [(STDERR, b"ops\n"), (STDOUT, b"bye\n")]
    assert log.read(21, 10) == (STDOUT, b"", -1)


def test_keeps_the_most_recent_bytes_and_reports_what_was_dropped(tmp_path: Path) -> None:
    log = OutputLog(str(tmp_path / "log"), MIN_CAPACITY)
    rng = random.Random(1)
    written = bytearray()
    kinds: list[int] = []
    for _ in range(400):
        chunk = rng.randbytes(rng.randint(1, 3000))
        stream = rng.choice((STDOUT, STDERR))
        log.append(stream, chunk)
        written += chunk
        kinds += [stream] * len(chunk)
    assert log.end == len(written)
    assert log.end - log.start <= MIN_CAPACITY
    with pytest.raises(Dropped) as dropped:
        log.read(0, 100)
    assert dropped.value.start == log.start
    pieces = read_all(log, log.start)
    assert b"".join(data for _, data in pieces) == written[log.start :]
    offset = log.start
    for stream, data in pieces:
        assert set(kinds[offset : offset + len(data)]) == {stream}
        offset += len(data)
    assert os.path.getsize(tmp_path / "log") <= log.run_slots * 8 + MIN_CAPACITY


def test_many_tiny_runs_shrink_the_window_instead_of_mislabelling(tmp_path: Path) -> None:
    log = OutputLog(str(tmp_path / "log"), MIN_CAPACITY)
    for i in range(3 * log.run_slots):
        log.append(i % 2, b"x")
    assert log.end - log.start <= log.run_slots
    assert all(len(data) == 1 for _, data in read_all(log, log.start))
    offset = log.start
    while offset < log.end:
        stream, _, _ = log.read(offset, 10)
        assert stream == offset % 2
        offset += 1


def test_a_follower_waits_for_live_output(tmp_path: Path) -> None:
    log = OutputLog(str(tmp_path / "log"), MIN_CAPACITY)
    got = bytearray()

    def follow() -> None:
        offset = 0
        while log.wait(offset, 5):
            if offset >= log.end and log.finished:
                return
            _, data, _ = log.read(offset, 1000)
            got.extend(data)
            offset += len(data)

    follower = threading.Thread(target=follow)
    follower.start()
    for i in range(100):
        log.append(STDOUT, b"%d\n" % i)
    log.finish()
    follower.join(5)
    assert bytes(got) == b"".join(b"%d\n" % i for i in range(100))


def test_close_removes_the_file(tmp_path: Path) -> None:
    log = OutputLog(str(tmp_path / "log"), MIN_CAPACITY)
    log.append(STDOUT, b"x" * (3 * MIN_CAPACITY))
    assert read_all(log, log.start)[0][1] == b"x" * MIN_CAPACITY
    log.close()
    assert not (tmp_path / "log").exists()
