"""DataDirSpace alone: sandbox disk admission and allocation, and the ballast, on a real
directory (the free space is pinned where a test needs a full file system)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from workspace_server.domain.errors import ResourceExhausted
from workspace_server.domain.models import ResourceLimits, Sandbox, SandboxState
from workspace_server.store.disk_space import CHUNKS, MIB, DataDirSpace, allocated_bytes
from workspace_server.store.sqlite import SandboxStore


def _sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def test_a_preallocated_image_is_allocated_in_full(tmp_path: Path) -> None:
    space = DataDirSpace(tmp_path, 8 * MIB, preallocate=True)
    image = _sparse(tmp_path / "disk.img", 16 * MIB)
    assert allocated_bytes(image) < MIB

    space.allocate_image(image)

    assert allocated_bytes(image) >= 16 * MIB and image.stat().st_size == 16 * MIB


def test_accounted_images_stay_sparse_and_their_promises_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = tmp_path / "sandboxes"
    images.mkdir()
    space = DataDirSpace(tmp_path, 8 * MIB)
    space.track(lambda: images.glob("*.img"))
    monkeypatch.setattr(space, "free", lambda: 48 * MIB)  # 40 MiB beside the reserve
    first = _sparse(images / "a.img", 16 * MIB)
    space.allocate_image(first)
    assert allocated_bytes(first) < MIB  # sparse: the host holds only what is written
    assert 23 * MIB < space.available() <= 24 * MIB  # 40 less a's promise (less what it has)
    second = _sparse(images / "b.img", 16 * MIB)
    space.allocate_image(second)
    third = _sparse(images / "c.img", 16 * MIB)
    with pytest.raises(ResourceExhausted, match="it needs 16 MiB"):
        space.allocate_image(third)  # a + b promise 32 of the 40: 16 more do not fit
    with pytest.raises(ResourceExhausted):
        space.check(16 * MIB)
    third.unlink()
    # What a sandbox writes leaves its promise and the free space alike: admission is unchanged.
    with open(first, "r+b") as handle:
        handle.write(b"x" * (4 * MIB))
        handle.flush()
        os.fsync(handle.fileno())
    monkeypatch.setattr(space, "free", lambda: 44 * MIB)
    assert 7 * MIB < space.available() <= 8 * MIB


def test_overcommit_keeps_images_sparse_and_admits_everything(tmp_path: Path) -> None:
    space = DataDirSpace(tmp_path, 8 * MIB, overcommit=True)
    image = _sparse(tmp_path / "disk.img", 16 * MIB)
    space.check(1 << 60)
    space.allocate_image(image)
    assert allocated_bytes(image) < MIB


def test_what_does_not_fit_beside_the_reserve_is_refused_with_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = DataDirSpace(tmp_path, 64 * MIB)
    monkeypatch.setattr(space, "free", lambda: 80 * MIB)  # no ballast held: 16 MiB beside the reserve
    space.check(16 * MIB)
    with pytest.raises(ResourceExhausted) as refused:
        space.check(17 * MIB)
    assert refused.value.details == {"needed_mb": 17, "free_mb": 16, "reserve_mb": 64}
    image = _sparse(tmp_path / "disk.img", 32 * MIB)
    with pytest.raises(ResourceExhausted, match="it needs 32 MiB, 16 MiB are free"):
        space.allocate_image(image)
    assert allocated_bytes(image) < MIB  # nothing was taken


def test_the_ballast_is_held_in_chunks_and_released_one_at_a_time_when_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    space = DataDirSpace(tmp_path, 32 * MIB)
    space.keep_reserve()
    assert space.held() == 16 * MIB and len(list((tmp_path / "disk-reserve").iterdir())) == CHUNKS
    space.keep_reserve()  # idempotent
    assert space.held() == 16 * MIB
    assert not space.make_room()  # not full: nothing is given up

    monkeypatch.setattr(space, "free", lambda: 0)
    assert space.make_room()
    assert space.held() == 12 * MIB
    monkeypatch.setattr(space, "free", lambda: 4 * MIB)  # what was released is the low-water mark
    space.keep_reserve()
    assert space.held() == 12 * MIB, "released and taken back at once"
    monkeypatch.undo()
    space.keep_reserve()  # room again: taken back
    assert space.held() == 16 * MIB


def test_a_full_state_database_write_is_retried_once_room_is_made(tmp_path: Path) -> None:
    calls: list[bool] = []
    store = SandboxStore(tmp_path / "state.db", on_full=lambda: calls.append(True) or True)
    record = Sandbox(
        id="sbx-0000000000000001",
        template="default",
        state=SandboxState.RUNNING,
        created_at="2026-01-01T00:00:00Z",
        updated_at="2026-01-01T00:00:00Z",
        limits=ResourceLimits(),
    )
    real = store._transaction
    failures = iter([sqlite3.OperationalError("database or disk is full")])

    def full_once(sql: str, params: tuple[object, ...]) -> list[sqlite3.Row]:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return real(sql, params)

    store._transaction = full_once  # type: ignore[method-assign]
    store.put(record)
    assert calls == [True] and store.get(record.id) == record


def test_images_of_a_file_system_without_fallocate_stay_usable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from workspace_server.store import disk_space

    def unsupported(fd: int, size: int) -> None:
        raise OSError(errno.EOPNOTSUPP, os.strerror(errno.EOPNOTSUPP))

    monkeypatch.setattr(disk_space, "allocate", unsupported)
    space = DataDirSpace(tmp_path, 8 * MIB, preallocate=True)
    image = _sparse(tmp_path / "disk.img", 16 * MIB)
    space.allocate_image(image)  # logged, not raised: the image stays sparse
    space.keep_reserve()
    assert space.held() == 0 and allocated_bytes(image) < MIB


def test_a_discarded_image_is_unlinked_in_the_background_and_counts_as_free_meanwhile(tmp_path: Path) -> None:
    space = DataDirSpace(tmp_path, 0)
    bundle = tmp_path / "sbx-0000000000000002"
    bundle.mkdir()
    image = _sparse(bundle / "disk.img", 8 * MIB)
    space.allocate_image(image)
    before = space.available()

    space.discard_image(image)

    assert not image.exists()
    assert space.available() >= before - MIB  # its blocks count as free at once
    space._wait_for_trash()
    assert list(space.trash.iterdir()) == [] and space._pending == 0
    leftover = space.trash / "sbx-0000000000000003-0000.img"
    leftover.write_bytes(b"x")  # a crash before the unlink
    space.sweep_trash()
    assert not leftover.exists()


@pytest.mark.parametrize("overcommit", [False, True])
def test_the_servers_own_writes_are_held_to_the_reserve_and_the_promises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, overcommit: bool
) -> None:
    """Uploads, layers and snapshots: beside the promises (unless overcommitted) and always
    beside the reserve, which overcommit does not give up for writes nobody promised."""
    images = tmp_path / "sandboxes"
    images.mkdir()
    space = DataDirSpace(tmp_path, 8 * MIB, overcommit=overcommit)
    space.track(lambda: images.glob("*.img"))
    monkeypatch.setattr(space, "free", lambda: 48 * MIB)
    _sparse(images / "a.img", 16 * MIB)
    left = 40 * MIB if overcommit else 24 * MIB
    space.admit_write(left - MIB, "an upload")
    with pytest.raises(ResourceExhausted, match="for an upload") as refused:
        space.admit_write(left + MIB, "an upload")
    assert refused.value.details["reserve_mb"] == 8
