# Generated from _async/filesystem.py by scripts/unasync.py. Do not edit: edit that file.
"""``client.filesystem``: read, write and manage files inside a sandbox.

``read``/``write`` move whole files through memory and suit small files. For large files use
``read_stream``/``download`` and ``upload`` (or ``write`` with a file object or an iterable):
they move the data in chunks and never hold the whole file.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections import deque
from collections.abc import Iterator
from typing import IO, Any

from .._exceptions import WorkspaceConnectionError, error_from_envelope
from .._primitives import upload_chunks
from .._protocol import ApiRequest
from .._protocol import filesystem as protocol
from .._protocol._common import invalid_response
from .._sse import ServerSentEvent, SSEDecoder
from ..types import FileContent, FileInfo, FileList, FileWatchEvent, LocalPath
from ._api_client import APIClient
from ._streaming import ResponseStream

DEFAULT_CHUNK_SIZE = 256 * 1024


class FileSystemService:
    """Files inside a sandbox. Paths are absolute; relative ones start at ``/workspace``."""

    def __init__(self, api: APIClient) -> None:
        self._api = api

    def read(self, sandbox_id: str, path: str) -> bytes:
        """The whole file as bytes (use ``read_stream``/``download`` for large files)."""
        response = self._api.request(protocol.read_request(sandbox_id, path))
        return response.content

    def read_string(self, sandbox_id: str, path: str, encoding: str = "utf-8") -> str:
        """The whole file decoded as text."""
        return (self.read(sandbox_id, path)).decode(encoding)

    def read_stream(self, sandbox_id: str, path: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> FileReadStream:
        """Stream the file in chunks of at most ``chunk_size`` bytes::

            with client.filesystem.read_stream(sandbox_id, "/workspace/big.bin") as f:
                print(f.size)
                for chunk in f:
                    ...

        The request is sent when the stream is entered or first iterated.
        """
        return FileReadStream(self._api, protocol.read_request(sandbox_id, path), chunk_size=chunk_size)

    def download(
        self,
        sandbox_id: str,
        path: str,
        destination: LocalPath | IO[bytes],
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> int:
        """Copy a sandbox file to a local path or writable binary file; returns the byte count.

        A local path is written in place; if the transfer fails the partial file is removed.
        """
        if isinstance(destination, (str, os.PathLike)):
            written = 0
            try:
                with open(destination, "wb") as local_file:
                    written = self._copy_to(sandbox_id, path, local_file, chunk_size)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(destination)
                raise
            return written
        return self._copy_to(sandbox_id, path, destination, chunk_size)

    def _copy_to(self, sandbox_id: str, path: str, local_file: IO[bytes], chunk_size: int) -> int:
        written = 0
        with self.read_stream(sandbox_id, path, chunk_size) as chunks:
            for chunk in chunks:
                local_file.write(chunk)
                written += len(chunk)
        return written

    def write(self, sandbox_id: str, path: str, content: FileContent) -> FileInfo:
        """Create or replace a file (parents are created; the replace is atomic).

        ``content`` is bytes, a binary file object, or a stream of byte chunks (anything in
        ``FileContent``); all but bytes are sent as they are read, never held whole.
        """
        body: bytes | Iterator[bytes]
        if isinstance(content, (bytes, bytearray, memoryview)):
            body = bytes(content)
        else:
            body = upload_chunks(content, DEFAULT_CHUNK_SIZE)
        data = self._api.request_json(protocol.write_request(sandbox_id, path), content=body)
        return protocol.parse_file_info(data)

    def write_string(self, sandbox_id: str, path: str, content: str, encoding: str = "utf-8") -> FileInfo:
        """Create or replace a text file."""
        return self.write(sandbox_id, path, content.encode(encoding))

    def upload(
        self,
        sandbox_id: str,
        path: str,
        source: LocalPath | IO[bytes],
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> FileInfo:
        """Stream a local file (path or binary file object) into the sandbox."""
        if isinstance(source, (str, os.PathLike)):
            with open(source, "rb") as local_file:
                return self._upload_file(sandbox_id, path, local_file, chunk_size)
        return self._upload_file(sandbox_id, path, source, chunk_size)

    def _upload_file(self, sandbox_id: str, path: str, local_file: IO[bytes], chunk_size: int) -> FileInfo:
        # A known length is sent as Content-Length (instead of chunked encoding), which lets
        # the server reject an oversized upload before reading it.
        size = _remaining_size(local_file)
        headers = {"Content-Length": str(size)} if size is not None else None
        data = self._api.request_json(
            protocol.write_request(sandbox_id, path),
            content=upload_chunks(local_file, chunk_size),
            headers=headers,
        )
        return protocol.parse_file_info(data)

    def mkdir(self, sandbox_id: str, path: str, recursive: bool = False) -> FileInfo:
        """Create a directory (and its parents with ``recursive=True``)."""
        data = self._api.request_json(protocol.mkdir_request(sandbox_id, path, recursive))
        return protocol.parse_file_info(data)

    def list(self, sandbox_id: str, path: str) -> FileList:
        """Entries of a directory, sorted by name (a ``list``; ``.truncated`` is true when the
        server stopped at its maximum number of entries)."""
        request = protocol.list_request(sandbox_id, path)
        data = self._api.request_json(request)
        return protocol.parse_file_list(data, dict(request.error_context))

    def stat(self, sandbox_id: str, path: str) -> FileInfo:
        """Metadata of one entry (a final symlink is described, not followed)."""
        data = self._api.request_json(protocol.stat_request(sandbox_id, path))
        return protocol.parse_file_info(data)

    def exists(self, sandbox_id: str, path: str) -> bool:
        """Whether the path exists."""
        data = self._api.request_json(protocol.exists_request(sandbox_id, path))
        return protocol.parse_exists(data)

    def remove(self, sandbox_id: str, path: str, recursive: bool = False) -> None:
        """Delete a file, or a directory tree with ``recursive=True``."""
        self._api.request(protocol.remove_request(sandbox_id, path, recursive))

    def move(self, sandbox_id: str, source: str, destination: str) -> FileInfo:
        """Move or rename; returns the entry at its new path."""
        data = self._api.request_json(protocol.move_request(sandbox_id, source, destination))
        return protocol.parse_file_info(data)

    def watch(self, sandbox_id: str, path: str, recursive: bool = False) -> FileWatch:
        """Watch a directory (or one file) for changes, with inotify inside the sandbox::

            with client.filesystem.watch(sandbox_id, "/workspace", recursive=True) as changes:
                for change in changes:
                    print(change.type, change.path)

        Events: ``create``, ``write``, ``remove``, ``rename`` (with ``new_path``),
        ``chmod``, and ``overflow`` when the kernel dropped changes. ``recursive=True``
        also watches directories created later. A missing path raises
        ``FileNotFoundError`` when the watch is entered. Closing it removes the watch.
        """
        return FileWatch(
            self._api, protocol.watch_request(sandbox_id, path, recursive), path=path, recursive=recursive
        )

    def copy(self, sandbox_id: str, source: str, destination: str, recursive: bool = True) -> FileInfo:
        """Copy a file, or a directory tree (``recursive`` defaults to true, as on the server)."""
        data = self._api.request_json(protocol.copy_request(sandbox_id, source, destination, recursive))
        return protocol.parse_file_info(data)


class FileWatch(ResponseStream):
    """Changes under a path, as ``FileWatchEvent`` objects (``client.filesystem.watch``).

    Enter it (``with``) to have the watch in place before you go on: changes made
    after that are reported. Iterate it for events; it ends only when closed (raising if
    the watch fails, e.g. ``FileNotFoundError`` once the watched path is removed).
    Closing it removes the watch inside the sandbox.
    """

    def __init__(self, api: APIClient, request: ApiRequest, *, path: str, recursive: bool) -> None:
        super().__init__(api, request, api.config.stream_timeout())
        self.path = path
        self.recursive = recursive
        self._decoder = SSEDecoder()
        self._pending: deque[ServerSentEvent] = deque()
        self._ready = False

    def _enter(self) -> None:
        if self._ready:
            return
        self._open_response()
        first = self._next()
        if isinstance(first, dict) and first.get("event") == "ready":
            self._ready = True
            return
        raise invalid_response(f"file watch began with {first!r} instead of a ready event")

    def _next(self) -> FileWatchEvent | dict[str, Any] | None:
        """The next change, a ready payload, or None at the end of the body; error events raise."""
        while True:
            while not self._pending:
                chunk = self._read_chunk()
                if chunk is None:
                    return None
                self._pending.extend(self._decoder.feed(chunk))
            event = protocol.parse_watch_event(self._pending.popleft())
            if isinstance(event, dict) and event.get("event") == "error":
                raise error_from_envelope(event, context=dict(self._request.error_context))
            if event is not None:
                return event

    def __iter__(self) -> Iterator[FileWatchEvent]:
        return self._iterate()

    def _iterate(self) -> Iterator[FileWatchEvent]:
        try:
            self._enter()
            while True:
                event = self._next()
                if event is None:
                    if self.closed:
                        return
                    raise WorkspaceConnectionError(
                        f"the watch of {self.path} ended unexpectedly", details=dict(self._request.error_context)
                    )
                if isinstance(event, FileWatchEvent):
                    yield event
        finally:
            self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("watching" if self._ready else "new")
        return f"<{type(self).__name__} path={self.path!r} recursive={self.recursive} {state}>"


class FileReadStream(ResponseStream):
    """A sandbox file being downloaded: iterate it for byte chunks (once). ``size`` is the
    ``Content-Length`` once the stream is open."""

    def __init__(self, api: APIClient, request: ApiRequest, *, chunk_size: int) -> None:
        super().__init__(api, request, api.config.request_timeout(), chunk_size)
        self._size: int | None = None

    @property
    def size(self) -> int | None:
        """Total size in bytes, when the stream is open and the server sent it."""
        return self._size

    def _enter(self) -> None:
        response = self._open_response()
        length = response.headers.get("Content-Length")
        self._size = int(length) if length and length.isdigit() else None

    def __iter__(self) -> Iterator[bytes]:
        return self._iterate_chunks()

    def _iterate_chunks(self) -> Iterator[bytes]:
        try:
            self._enter()
            while (chunk := self._read_chunk()) is not None:
                yield chunk
        finally:
            self.close()


def _remaining_size(file: IO[bytes]) -> int | None:
    """Bytes left to read in a regular file, or ``None`` if it cannot be known."""
    try:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode):
            return None  # pipes and sockets report no meaningful size
        return max(status.st_size - file.tell(), 0)
    except (AttributeError, OSError, ValueError):  # no fileno(), unseekable, or closed
        return None
