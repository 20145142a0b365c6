"""The build context as the SDK streams it: a valid tar of the directory, links kept as
links, `.containerignore` honoured, a Containerfile sent beside it, never read whole."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

from workspace_sdk import Build, BuildFailedError, BuildTimeoutError
from workspace_sdk._exceptions import error_from_envelope
from workspace_sdk._protocol import build as protocol


def unpacked(root: Path, extra: dict[str, bytes] | None = None) -> dict[str, tarfile.TarInfo]:
    data = b"".join(protocol.context_tar(str(root), extra))
    with tarfile.open(fileobj=io.BytesIO(data)) as archive:
        return {member.name: member for member in archive}


def test_context_is_a_tar_of_the_directory(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("print('hi')\n")
    (tmp_path / "run.sh").write_text("#!/bin/sh\n")
    (tmp_path / "run.sh").chmod(0o755)
    (tmp_path / "big.bin").write_bytes(os.urandom(3 * protocol.CHUNK + 17))
    os.symlink("src/app.py", tmp_path / "link")
    members = unpacked(tmp_path, {".workspace-containerfile-1": b"FROM x\n"})
    assert set(members) == {"src", "src/app.py", "run.sh", "big.bin", "link", ".workspace-containerfile-1"}
    assert members["run.sh"].mode == 0o755 and members["src"].isdir()
    assert members["link"].issym() and members["link"].linkname == "src/app.py"
    assert members["big.bin"].size == 3 * protocol.CHUNK + 17
    chunks = list(protocol.context_tar(str(tmp_path)))
    assert max(len(c) for c in chunks) <= protocol.CHUNK + 1024  # streamed, a chunk at a time


def test_containerignore_leaves_files_out(tmp_path: Path) -> None:
    for name in ("keep.txt", "notes.md", "build/out.o", ".git/HEAD", "docs/readme.md", "docs/keep.md"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    (tmp_path / ".containerignore").write_text("# comment\n.git\nbuild/\n*.md\ndocs\n!docs/keep.md\n")
    members = set(unpacked(tmp_path))
    assert {"keep.txt", ".containerignore", "docs/keep.md"} <= members
    assert not members & {"notes.md", "build", "build/out.o", ".git", ".git/HEAD", "docs/readme.md"}


def test_failed_build_becomes_its_typed_error() -> None:
    build = Build(
        id="bld-1",
        template="t:1",
        base="b:1",
        state="error",
        error={
            "code": "BUILD_FAILED",
            "message": "step 2 (line 3) exited with 7",
            "step": 1,
            "line": 3,
            "exit_code": 7,
        },
    )
    error = error_from_envelope(protocol.failure_envelope(build))
    assert isinstance(error, BuildFailedError)
    assert (error.build_id, error.step, error.line, error.exit_code) == ("bld-1", 1, 3, 7)
    timed = Build(
        id="bld-2", template="t:1", base="b:1", state="error", error={"code": "BUILD_TIMEOUT", "message": "m"}
    )
    assert isinstance(error_from_envelope(protocol.failure_envelope(timed)), BuildTimeoutError)
