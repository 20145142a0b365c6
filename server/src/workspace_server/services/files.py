"""File operations, done by the agent from inside the sandbox's own root.

Reads and writes stream through the agent link's flow-control window: the server never
holds more than a window of a file, whatever its size."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from workspace_server.agent import wire
from workspace_server.agent_link.connection import AgentDisconnected, AgentStream, StreamEnded
from workspace_server.domain.errors import AgentNotConnected, WorkspaceError
from workspace_server.domain.paths import sandbox_path
from workspace_server.services.sandboxes import SandboxService


class UploadTooLarge(WorkspaceError):
    code = "PAYLOAD_TOO_LARGE"


class FileService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self.sandboxes = sandboxes

    async def _open(self, sandbox_id: str, request: dict[str, Any]) -> AgentStream:
        connection = self.sandboxes.connection(sandbox_id)
        try:
            return await connection.open(request)
        except AgentDisconnected:
            raise AgentNotConnected(sandbox_id) from None

    async def _request(self, sandbox_id: str, request: dict[str, Any]) -> dict[str, Any]:
        stream = await self._open(sandbox_id, request)
        try:
            return await stream.recv_message()
        except AgentDisconnected:
            raise AgentNotConnected(sandbox_id) from None
        finally:
            stream.close()

    async def read(self, sandbox_id: str, path: str) -> tuple[int, AsyncIterator[bytes]]:
        """The file's size, then its bytes; errors (not found...) raise before any byte."""
        stream = await self._open(sandbox_id, {"op": "read", "path": sandbox_path(path)})
        try:
            header = await stream.recv_message()
        except AgentDisconnected:
            stream.close()
            raise AgentNotConnected(sandbox_id) from None
        except BaseException:
            stream.close()
            raise

        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    kind, payload = await stream.recv()
                    if kind == wire.OUT:
                        yield payload
                    elif kind == wire.MSG or kind == wire.CLOSE:
                        return
            finally:
                stream.close()

        return int(header["size"]), chunks()

    async def write(self, sandbox_id: str, path: str, body: AsyncIterable[bytes], max_bytes: int) -> dict[str, Any]:
        stream = await self._open(sandbox_id, {"op": "write", "path": sandbox_path(path)})
        try:
            await stream.recv_message()  # "ready", or the error that says why not
            total = 0
            try:
                async for chunk in body:
                    total += len(chunk)
                    if total > max_bytes:
                        raise UploadTooLarge(f"upload exceeds the limit of {max_bytes} bytes")
                    if chunk:
                        await stream.send_data(chunk)
                await stream.send_message({"type": "eof"})
            except StreamEnded:
                pass  # the agent stopped the upload (disk full...): its answer says why
            answer = await stream.recv_message()
            if answer.get("type") != "ok":
                raise WorkspaceError("the agent ended the upload early", code="INTERNAL")
            return dict(answer["info"])
        except AgentDisconnected:
            raise AgentNotConnected(sandbox_id, "the sandbox agent disconnected during the upload") from None
        finally:
            stream.close()  # before eof this makes the agent discard the partial file

    async def list(self, sandbox_id: str, path: str) -> list[dict[str, Any]]:
        stream = await self._open(sandbox_id, {"op": "list", "path": sandbox_path(path)})
        files: list[dict[str, Any]] = []
        try:
            while True:
                message = await stream.recv_message()
                files.extend(message["files"])
                if message["type"] == "ok":
                    return files
        except AgentDisconnected:
            raise AgentNotConnected(sandbox_id) from None
        finally:
            stream.close()

    async def stat(self, sandbox_id: str, path: str) -> dict[str, Any]:
        return dict((await self._request(sandbox_id, {"op": "stat", "path": sandbox_path(path)}))["info"])

    async def exists(self, sandbox_id: str, path: str) -> bool:
        return bool((await self._request(sandbox_id, {"op": "exists", "path": sandbox_path(path)}))["exists"])

    async def mkdir(self, sandbox_id: str, path: str, recursive: bool) -> dict[str, Any]:
        answer = await self._request(sandbox_id, {"op": "mkdir", "path": sandbox_path(path), "recursive": recursive})
        return dict(answer["info"])

    async def remove(self, sandbox_id: str, path: str, recursive: bool) -> None:
        await self._request(sandbox_id, {"op": "remove", "path": sandbox_path(path), "recursive": recursive})

    async def move(self, sandbox_id: str, source: str, destination: str) -> dict[str, Any]:
        answer = await self._request(
            sandbox_id,
            {
                "op": "move",
                "source": sandbox_path(source, field="source"),
                "destination": sandbox_path(destination, field="destination"),
            },
        )
        return dict(answer["info"])

    async def copy(self, sandbox_id: str, source: str, destination: str, recursive: bool) -> dict[str, Any]:
        answer = await self._request(
            sandbox_id,
            {
                "op": "copy",
                "source": sandbox_path(source, field="source"),
                "destination": sandbox_path(destination, field="destination"),
                "recursive": recursive,
            },
        )
        return dict(answer["info"])
