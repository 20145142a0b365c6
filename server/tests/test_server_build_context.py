"""templates/build_context.py: the uploaded context unpacked safely, and what a COPY takes
from it (where it lands, its cache digest)."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from workspace_server.domain.containerfile import Step, parse, plan
from workspace_server.domain.errors import InvalidRequest, ResourceExhausted
from workspace_server.domain.models import ImageConfig
from workspace_server.templates import build_context


def archive(tmp_path: Path, entries: list[tarfile.TarInfo], data: dict[str, bytes] | None = None) -> Path:
    path = tmp_path / "context.tar"
    with tarfile.open(path, "w") as out:
        for info in entries:
            content = (data or {}).get(info.name, b"")
            info.size = len(content) if info.isreg() else 0
            out.addfile(info, io.BytesIO(content))
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, 0o644
    return info


@pytest.mark.parametrize(
    "bad",
    [
        entry("../escape"),
        entry("/etc/passwd"),
        entry("link", tarfile.SYMTYPE, "../../outside"),
        entry("abs", tarfile.SYMTYPE, "/etc"),
        entry("dev", tarfile.CHRTYPE),
    ],
    ids=["dotdot", "absolute", "link-out", "absolute-link", "device"],
)
def test_unsafe_context_entries_are_refused(tmp_path: Path, bad: tarfile.TarInfo) -> None:
    with pytest.raises(InvalidRequest, match="unsafe entry"):
        build_context.unpack_context(archive(tmp_path, [bad]), tmp_path / "ctx", 1 << 20)
    assert not (tmp_path / "escape").exists()


def test_context_size_is_bounded(tmp_path: Path) -> None:
    big = archive(tmp_path, [entry("a")], {"a": b"x" * 2048})
    with pytest.raises(InvalidRequest, match="more than 1024 bytes"):
        build_context.unpack_context(big, tmp_path / "ctx", 1024)


def copy_step(line: str) -> Step:
    return plan(parse(f"FROM a\nWORKDIR /w\n{line}\n", {}), ImageConfig(), {})[-1]


def make_context(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    (root / "dir" / "sub").mkdir(parents=True)
    (root / "dir" / "sub" / "f.txt").write_text("f")
    (root / "one.txt").write_text("one")
    (root / "run.sh").write_text("#!/bin/sh\n")
    os.chmod(root / "run.sh", 0o755)
    os.symlink("one.txt", root / "alias")
    return root


def test_copy_destinations(tmp_path: Path) -> None:
    root = make_context(tmp_path)
    file_to_name = build_context.plan_copy(root, copy_step("COPY one.txt renamed.txt"), 1 << 20)
    assert (file_to_name.target_dir, [e.name for e in file_to_name.entries]) == ("/w", ["renamed.txt"])
    into_dir = build_context.plan_copy(root, copy_step("COPY one.txt run.sh /opt/"), 1 << 20)
    assert into_dir.target_dir == "/opt" and [(e.name, e.mode) for e in into_dir.entries] == [
        ("one.txt", 0o644),
        ("run.sh", 0o755),
    ]
    contents = build_context.plan_copy(root, copy_step("COPY dir /srv"), 1 << 20)
    assert contents.target_dir == "/srv" and [e.name for e in contents.entries] == ["sub", "sub/f.txt"]
    globbed = build_context.plan_copy(root, copy_step("COPY *.txt ./"), 1 << 20)
    assert [e.name for e in globbed.entries] == ["one.txt"]
    with pytest.raises(InvalidRequest, match="line 3: 'missing' is not in the build context"):
        build_context.plan_copy(root, copy_step("COPY missing /x"), 1 << 20)
    with pytest.raises(InvalidRequest, match="over the maximum"):
        build_context.plan_copy(root, copy_step("COPY . /x"), 2)


def test_digest_follows_content_and_mode_not_mtime_or_place(tmp_path: Path) -> None:
    root = make_context(tmp_path)
    step = copy_step("COPY . /app")
    first = build_context.plan_copy(root, step, 1 << 20).digest
    os.utime(root / "one.txt", (1, 1))
    moved = tmp_path / "elsewhere"
    root.rename(moved)
    assert build_context.plan_copy(moved, step, 1 << 20).digest == first
    (moved / "one.txt").write_text("changed")
    assert build_context.plan_copy(moved, step, 1 << 20).digest != first


def test_copy_tar_carries_the_owner(tmp_path: Path) -> None:
    root = make_context(tmp_path)
    copy = build_context.plan_copy(root, copy_step("COPY . /app"), 1 << 20)
    out = io.BytesIO()
    build_context.write_copy_tar(copy, out, (1000, 1000))
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as packed:
        members = {m.name: m for m in packed}
    assert {(m.uid, m.gid) for m in members.values()} == {(1000, 1000)}
    assert members["alias"].issym() and members["alias"].linkname == "one.txt"
    assert members["run.sh"].mode == 0o755


def test_a_context_that_unpacks_past_the_room_left_is_refused_before_the_file_is_written(tmp_path: Path) -> None:
    asked: list[int] = []

    def room(size: int) -> None:
        asked.append(size)
        if sum(asked) > 12 << 20:
            raise ResourceExhausted("no room")

    small, large = b"x" * (1 << 20), b"y" * (16 << 20)
    path = archive(tmp_path, [entry("small"), entry("large")], {"small": small, "large": large})
    with pytest.raises(ResourceExhausted):
        build_context.unpack_context(path, tmp_path / "context", 1 << 30, room)
    assert (tmp_path / "context" / "small").read_bytes() == small
    assert not (tmp_path / "context" / "large").exists()
