"""Large files through the streaming helpers, and the file edge cases, against a live server."""

from __future__ import annotations

import hashlib
import io
import os
import tracemalloc
from pathlib import Path

import pytest

from workspace_sdk import (
    AsyncWorkspaceClient,
    FileNotFoundError,
    RunCommandOptions,
    WorkspaceClient,
    WorkspaceError,
)

LARGE_SIZE = 64 * 1024 * 1024
# Moving 64 MiB must not take anywhere near 64 MiB of Python memory: the helpers stream
# fixed-size chunks. The bound leaves room for buffers in httpx and the SSL-less socket layer.
PEAK_MEMORY_LIMIT = 16 * 1024 * 1024


@pytest.fixture(scope="module")
def large_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    path = tmp_path_factory.mktemp("large") / "large.bin"
    digest = hashlib.sha256()
    with open(path, "wb") as file:
        for _ in range(LARGE_SIZE // (1024 * 1024)):
            block = os.urandom(1024 * 1024)
            digest.update(block)
            file.write(block)
    return path, digest.hexdigest()


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def test_large_file_upload_download_sync(
    client: WorkspaceClient, sandbox_id: str, large_file: tuple[Path, str], tmp_path: Path
) -> None:
    source, expected_digest = large_file
    tracemalloc.start()
    try:
        info = client.filesystem.upload(sandbox_id, "/workspace/large.bin", source)
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        target = tmp_path / "downloaded.bin"
        written = client.filesystem.download(sandbox_id, "/workspace/large.bin", target)
        _, download_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert info.size == LARGE_SIZE
    assert written == LARGE_SIZE
    assert sha256_of(target) == expected_digest
    assert upload_peak < PEAK_MEMORY_LIMIT, f"upload peaked at {upload_peak} bytes"
    assert download_peak < PEAK_MEMORY_LIMIT, f"download peaked at {download_peak} bytes"
    in_sandbox = client.process.run(sandbox_id, "sha256sum", RunCommandOptions(args=["/workspace/large.bin"]))
    assert in_sandbox.stdout.split()[0] == expected_digest


async def test_large_file_upload_download_async(
    aclient: AsyncWorkspaceClient, sandbox_id: str, large_file: tuple[Path, str], tmp_path: Path
) -> None:
    source, expected_digest = large_file
    tracemalloc.start()
    try:
        with open(source, "rb") as file_object:
            info = await aclient.filesystem.upload(sandbox_id, "/workspace/large.bin", file_object)
        target = tmp_path / "downloaded.bin"
        written = await aclient.filesystem.download(sandbox_id, "/workspace/large.bin", target)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.size == written == LARGE_SIZE
    assert sha256_of(target) == expected_digest
    assert peak < PEAK_MEMORY_LIMIT, f"peaked at {peak} bytes"


def test_read_stream_chunks_and_size(client: WorkspaceClient, sandbox_id: str) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    client.filesystem.write(sandbox_id, "/workspace/blob.bin", io.BytesIO(payload))
    with client.filesystem.read_stream(sandbox_id, "/workspace/blob.bin", chunk_size=64 * 1024) as chunks:
        assert chunks.size == len(payload)
        received = list(chunks)
    assert b"".join(received) == payload
    assert max(len(chunk) for chunk in received) <= 64 * 1024
    assert chunks.closed


async def test_copy_between_sandboxes_by_streaming(aclient: AsyncWorkspaceClient, sandbox_id: str) -> None:
    payload = os.urandom(2 * 1024 * 1024)
    await aclient.filesystem.write(sandbox_id, "/workspace/src.bin", payload)
    other = await aclient.sandbox.create()
    try:
        stream = aclient.filesystem.read_stream(sandbox_id, "/workspace/src.bin")
        info = await aclient.filesystem.write(other.id, "/workspace/dst.bin", stream)
        assert info.size == len(payload)
        assert await aclient.filesystem.read(other.id, "/workspace/dst.bin") == payload
    finally:
        await aclient.sandbox.delete(other.id, force=True)


def test_write_from_generator_and_parents_are_created(client: WorkspaceClient, sandbox_id: str) -> None:
    info = client.filesystem.write(
        sandbox_id, "/workspace/a/b/c/gen.txt", (f"line {i}\n".encode() for i in range(1000))
    )
    assert info.size == sum(len(f"line {i}\n") for i in range(1000))
    assert client.filesystem.stat(sandbox_id, "/workspace/a/b").type == "directory"


def test_relative_paths_start_at_workspace(client: WorkspaceClient, sandbox_id: str) -> None:
    client.filesystem.write_string(sandbox_id, "relative.txt", "rel")
    assert client.filesystem.read_string(sandbox_id, "/workspace/relative.txt") == "rel"


def test_download_of_missing_file_leaves_nothing(client: WorkspaceClient, sandbox_id: str, tmp_path: Path) -> None:
    target = tmp_path / "never.bin"
    with pytest.raises(FileNotFoundError):
        client.filesystem.download(sandbox_id, "/workspace/never.bin", target)
    assert not target.exists()


def test_directory_errors(client: WorkspaceClient, sandbox_id: str) -> None:
    client.filesystem.write_string(sandbox_id, "/workspace/full/file.txt", "x")
    with pytest.raises(WorkspaceError) as not_empty:
        client.filesystem.remove(sandbox_id, "/workspace/full")
    assert not_empty.value.code == "DIRECTORY_NOT_EMPTY"
    with pytest.raises(WorkspaceError) as not_a_dir:
        client.filesystem.list(sandbox_id, "/workspace/full/file.txt")
    assert not_a_dir.value.code == "NOT_A_DIRECTORY"
    from workspace_sdk import FileExistsError

    with pytest.raises(FileExistsError):
        client.filesystem.mkdir(sandbox_id, "/workspace/full")
