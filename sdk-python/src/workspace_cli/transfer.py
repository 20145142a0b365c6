"""``workspace cp``: stream one file into or out of a sandbox, with a progress bar."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from workspace_cli.output import fail

if TYPE_CHECKING:
    from rich.progress import Progress

    from workspace_sdk import WorkspaceClient

CHUNK_SIZE = 1024 * 1024
# Smaller files are done before a bar would be readable.
PROGRESS_THRESHOLD = 4 * 1024 * 1024


@dataclass
class RemotePath:
    sandbox_id: str
    path: str


def parse_location(value: str) -> RemotePath | str:
    """``ID:PATH`` is a sandbox path (an ID never holds ``/``); anything else is local
    (write ``./a:b`` for a local name with a colon)."""
    head, sep, tail = value.partition(":")
    if sep and head and "/" not in head:
        return RemotePath(head, tail or "/workspace")
    return value


def progress_bar(total: int | None, description: str, enabled: bool) -> Progress | None:
    if not enabled or not sys.stderr.isatty() or (total is not None and total < PROGRESS_THRESHOLD):
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )


def copy(api: WorkspaceClient, source: str, destination: str, progress: bool) -> dict[str, Any]:
    src, dst = parse_location(source), parse_location(destination)
    if isinstance(src, RemotePath) and isinstance(dst, RemotePath):
        fail("copy between sandboxes is not supported: copy through a local file", 2)
    if not isinstance(src, RemotePath) and not isinstance(dst, RemotePath):
        fail("one side must be a sandbox path, ID:PATH (for example sbx-1234:/workspace/a.txt)", 2)
    if isinstance(dst, RemotePath):
        assert isinstance(src, str)
        return upload(api, src, dst, progress)
    assert isinstance(src, RemotePath) and isinstance(dst, str)
    return download(api, src, dst, progress)


def upload(api: WorkspaceClient, source: str, destination: RemotePath, progress: bool) -> dict[str, Any]:
    path = destination.path
    if source == "-":
        if path.endswith("/"):
            fail("with - as the source, name the destination file", 2)
        info = api.filesystem.upload(destination.sandbox_id, path, sys.stdin.buffer)
        return {"source": source, "destination": f"{destination.sandbox_id}:{info.path}", "bytes": info.size}
    local = Path(source)
    if local.is_dir():
        fail(f"{source} is a directory: cp copies one file (archive a tree with tar first)", 2)
    if path.endswith("/") or is_remote_directory(api, destination):
        path = str(PurePosixPath(path) / local.name)
    try:
        local_file = open(local, "rb")
    except OSError as exc:
        fail(f"cannot read {source}: {exc.strerror}", 1)
    with local_file:
        size = os.fstat(local_file.fileno()).st_size
        bar = progress_bar(size, f"{local.name} →", progress)
        with bar or nullcontext():
            reader: IO[bytes] = (
                bar.wrap_file(local_file, total=size, description=f"{local.name} →") if bar else local_file
            )
            info = api.filesystem.upload(destination.sandbox_id, path, reader, chunk_size=CHUNK_SIZE)
    return {"source": source, "destination": f"{destination.sandbox_id}:{info.path}", "bytes": info.size}


def is_remote_directory(api: WorkspaceClient, location: RemotePath) -> bool:
    from workspace_sdk import FileNotFoundError as RemoteFileNotFoundError

    try:
        return api.filesystem.stat(location.sandbox_id, location.path).type == "directory"
    except RemoteFileNotFoundError:
        return False


def download(api: WorkspaceClient, source: RemotePath, destination: str, progress: bool) -> dict[str, Any]:
    from workspace_sdk import WorkspaceError

    name = PurePosixPath(source.path).name
    if destination == "-":
        written = stream_to(api, source, sys.stdout.buffer, None)
        sys.stdout.buffer.flush()
        return {"source": f"{source.sandbox_id}:{source.path}", "destination": "-", "bytes": written}
    local = Path(destination)
    if local.is_dir():
        local = local / name
    partial = local.with_name(f".{local.name}.part")
    try:
        with open(partial, "wb") as local_file:
            written = stream_to(api, source, local_file, progress)
        os.replace(partial, local)
    except WorkspaceError:  # some are OSErrors too (FileNotFoundError), but not about local files
        partial.unlink(missing_ok=True)
        raise
    except OSError as exc:
        partial.unlink(missing_ok=True)
        fail(f"cannot write {local}: {exc.strerror}", 1)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return {"source": f"{source.sandbox_id}:{source.path}", "destination": str(local), "bytes": written}


def stream_to(api: WorkspaceClient, source: RemotePath, local_file: IO[bytes], progress: bool | None) -> int:
    written = 0
    with api.filesystem.read_stream(source.sandbox_id, source.path, chunk_size=CHUNK_SIZE) as chunks:
        bar = progress_bar(chunks.size, f"→ {PurePosixPath(source.path).name}", bool(progress))
        with bar or nullcontext():
            task = bar.add_task(f"→ {PurePosixPath(source.path).name}", total=chunks.size) if bar else None
            for chunk in chunks:
                local_file.write(chunk)
                written += len(chunk)
                if bar is not None and task is not None:
                    bar.advance(task, len(chunk))
    return written


@contextmanager
def upload_progress(source: str, enabled: bool) -> Iterator[str | IO[bytes]]:
    """A local file to send, wrapped in a progress bar when that is worth it; a directory
    is passed on as its path (the SDK packs it)."""
    if Path(source).is_dir():
        yield source
        return
    try:
        local_file = open(source, "rb")
    except OSError as exc:
        fail(f"cannot read {source}: {exc.strerror}", 1)
    with local_file:
        size = os.fstat(local_file.fileno()).st_size
        bar = progress_bar(size, f"{Path(source).name} →", enabled)
        with bar or nullcontext():
            yield bar.wrap_file(local_file, total=size, description=f"{Path(source).name} →") if bar else local_file
