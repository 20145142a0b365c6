"""File operations, done by the agent from inside the sandbox's own root.

Reads, writes and directory listings stream through the agent link's flow-control window:
the server never holds more than a window of a file or a listing, whatever its size."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from workspace_server.agent_link.listing import DirectoryListing
from workspace_server.domain.errors import WorkspaceError
from workspace_server.domain.paths import sandbox_path
from workspace_server.services.sandboxes import SandboxService


class UploadTooLarge(WorkspaceError):
    code = "PAYLOAD_TOO_LARGE"


class FileService:
    """File operations on a sandbox's paths, each checked (absolute, no NUL) before the agent sees it."""

    def __init__(self, sandboxes: SandboxService) -> None:
        self.sandboxes = sandboxes

    async def read(self, sandbox_id: str, path: str) -> tuple[int, AsyncIterator[bytes]]:
        """The file's size, then its bytes; errors (not found...) raise before any byte."""
        path = sandbox_path(path)
        return await self.sandboxes.agent(sandbox_id).read(path)

    async def write(self, sandbox_id: str, path: str, body: AsyncIterable[bytes], max_bytes: int) -> dict[str, Any]:
        async def limited() -> AsyncIterator[bytes]:
            total = 0
            async for chunk in body:
                total += len(chunk)
                if total > max_bytes:
                    raise UploadTooLarge(f"upload exceeds the limit of {max_bytes} bytes")
                yield chunk

        path = sandbox_path(path)
        return await self.sandboxes.agent(sandbox_id).write(path, limited())

    async def list(self, sandbox_id: str, path: str, max_entries: int) -> BoundedListing:
        """Start listing; errors (not found, not a directory...) raise here, before any entry."""
        path = sandbox_path(path)
        return BoundedListing(await self.sandboxes.agent(sandbox_id).list_dir(path), max_entries)

    async def stat(self, sandbox_id: str, path: str) -> dict[str, Any]:
        path = sandbox_path(path)
        return await self.sandboxes.agent(sandbox_id).stat(path)

    async def exists(self, sandbox_id: str, path: str) -> bool:
        path = sandbox_path(path)
        return await self.sandboxes.agent(sandbox_id).exists(path)

    async def mkdir(self, sandbox_id: str, path: str, recursive: bool) -> dict[str, Any]:
        path = sandbox_path(path)
        return await self.sandboxes.agent(sandbox_id).mkdir(path, recursive)

    async def remove(self, sandbox_id: str, path: str, recursive: bool) -> None:
        path = sandbox_path(path)
        await self.sandboxes.agent(sandbox_id).remove(path, recursive)

    async def move(self, sandbox_id: str, source: str, destination: str) -> dict[str, Any]:
        source, destination = sandbox_path(source, field="source"), sandbox_path(destination, field="destination")
        return await self.sandboxes.agent(sandbox_id).move(source, destination)

    async def copy(self, sandbox_id: str, source: str, destination: str, recursive: bool) -> dict[str, Any]:
        source, destination = sandbox_path(source, field="source"), sandbox_path(destination, field="destination")
        return await self.sandboxes.agent(sandbox_id).copy(source, destination, recursive)


class BoundedListing:
    """A directory's entries as they arrive (sorted by name), at most `max_entries` of them;
    `truncated` says, once iterated, whether there were more."""

    def __init__(self, listing: DirectoryListing, max_entries: int) -> None:
        self._listing = listing
        self._max_entries = max_entries
        self.truncated = False

    async def entries(self) -> AsyncIterator[dict[str, Any]]:
        count = 0
        try:
            async for entry in self._listing.entries():
                if count == self._max_entries:
                    self.truncated = True
                    return
                count += 1
                yield entry
        finally:
            self._listing.close()

    def close(self) -> None:
        self._listing.close()
