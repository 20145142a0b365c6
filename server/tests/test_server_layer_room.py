"""Unpacking a layer asks the data dir for room as it writes: large files before they are
written, small ones a step at a time (one layer alone, no server)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from workspace_server.domain.errors import ResourceExhausted
from workspace_server.templates import layers
from workspace_server.templates.room import ROOM_STEP

MIB = 1 << 20


def _layer(*sizes: int) -> io.BytesIO:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        for index, size in enumerate(sizes):
            info = tarfile.TarInfo(f"file-{index}")
            info.size = size
            archive.addfile(info, io.BytesIO(b"\0" * size))
    out.seek(0)
    return out


def test_small_files_are_admitted_a_step_at_a_time_and_large_ones_whole(tmp_path: Path) -> None:
    asked: list[int] = []
    layers.unpack(
        _layer(*[MIB] * 10, 20 * MIB), tmp_path / "fs", compression=None, max_bytes=1 << 30, room=asked.append
    )
    # 1 MiB files: one step before the first and one after the eighth; then the 20 MiB file
    # needs what the steps have not covered of it.
    assert asked == [ROOM_STEP, ROOM_STEP, 30 * MIB - 2 * ROOM_STEP]
    assert sum(asked) >= 30 * MIB


def test_no_room_stops_the_unpack_before_the_file_is_written(tmp_path: Path) -> None:
    def room(size: int) -> None:
        if size > 4 * MIB:
            raise ResourceExhausted("no room")

    with pytest.raises(ResourceExhausted):
        layers.unpack(_layer(16 * MIB), tmp_path / "fs", compression=None, max_bytes=1 << 30, room=room)
    assert not (tmp_path / "fs" / "file-0").exists()
