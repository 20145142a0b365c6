"""Fixtures for the SDK unit tests: no server, HTTP answered by ``httpx.MockTransport``.

Most behaviour tests run twice, once per client flavour, through ``Driver``: it builds the
client of the flavour and hides the sync/async difference (awaiting results, iterating
streams) so one test body checks both.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import httpx
import pytest

from workspace_sdk import AsyncWorkspaceClient, WorkspaceClient

Handler = Callable[[httpx.Request], httpx.Response]

SANDBOX_JSON: dict[str, Any] = {
    "id": "sbx-1",
    "template": "workspace-test:latest",
    "state": "running",
    "created_at": "2026-11-26T03:00:00Z",
    "updated_at": "2026-11-26T03:00:01Z",
    "name": None,
    "env": {},
    "metadata": {},
    "nfs_url": None,
    "timeout": 3600,
    "error_message": None,
    "expires_at": "2026-11-26T04:00:00Z",
    "cpu": 1.0,
    "memory_mb": 512,
    "pids": 256,
    "disk_mb": 1024,
    "network": False,
}

FILE_INFO_JSON: dict[str, Any] = {
    "name": "a.txt",
    "path": "/workspace/a.txt",
    "type": "file",
    "size": 5,
    "modified_at": "2026-11-26T03:00:00Z",
    "mode": "0644",
}


def error_response(status: int, code: str, message: str, **details: Any) -> httpx.Response:
    return httpx.Response(status, json={"code": code, "message": message, "details": details})


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


class TrackingStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body served chunk by chunk (to either client) that records being closed."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks
        self.closed = False
        self.chunks_served = 0

    def __iter__(self) -> Iterator[bytes]:
        for chunk in self._chunks:
            self.chunks_served += 1
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self._chunks:
            self.chunks_served += 1
            yield chunk

    def close(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


class Driver:
    """Build clients of one flavour and run calls on them as if they were all async."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.requests: list[httpx.Request] = []
        self._clients: list[Any] = []

    @property
    def is_async(self) -> bool:
        return self.kind == "async"

    def client(self, handler: Handler, **kwargs: Any) -> Any:
        def recording_handler(request: httpx.Request) -> httpx.Response:
            self.requests.append(request)
            return handler(request)

        transport = httpx.MockTransport(recording_handler)
        kwargs.setdefault("api_url", "http://workspace.test")
        client: Any
        if self.is_async:
            client = AsyncWorkspaceClient(**kwargs, http_client=httpx.AsyncClient(transport=transport))
        else:
            client = WorkspaceClient(**kwargs, http_client=httpx.Client(transport=transport))
        self._clients.append(client)
        return client

    async def call(self, result: Any) -> Any:
        return await result if inspect.isawaitable(result) else result

    async def collect(self, stream: Any, limit: int | None = None, into: list[Any] | None = None) -> list[Any]:
        """Iterate a stream, optionally stopping early with ``break``. Items also go to
        ``into`` as they arrive, so a caller still sees them if iteration raises."""
        items: list[Any] = [] if into is None else into
        if self.is_async:
            async for item in stream:
                items.append(item)
                if limit is not None and len(items) >= limit:
                    break
        else:
            for item in stream:
                items.append(item)
                if limit is not None and len(items) >= limit:
                    break
        return items

    async def enter(self, manager: Any) -> Any:
        return await manager.__aenter__() if self.is_async else manager.__enter__()

    async def exit(self, manager: Any) -> None:
        if self.is_async:
            await manager.__aexit__(None, None, None)
        else:
            manager.__exit__(None, None, None)

    async def close(self, closable: Any) -> None:
        if self.is_async:
            await closable.aclose()
        else:
            closable.close()

    async def close_all(self) -> None:
        for client in self._clients:
            await self.close(client)
            # The SDK leaves injected httpx clients open; close them for a clean test run.
            await self.close(client._api._http)


@pytest.fixture(params=["sync", "async"])
async def driver(request: pytest.FixtureRequest) -> AsyncIterator[Driver]:
    drv = Driver(request.param)
    yield drv
    await drv.close_all()


class Wire:
    """Canned server payloads, as a fixture (test modules cannot import conftest)."""

    sandbox_json = SANDBOX_JSON
    file_info_json = FILE_INFO_JSON
    TrackingStream = TrackingStream

    @staticmethod
    def sse(event: str, data: dict[str, Any]) -> bytes:
        return sse(event, data)

    @staticmethod
    def error(status: int, code: str, message: str, **details: Any) -> httpx.Response:
        return error_response(status, code, message, **details)


@pytest.fixture
def wire() -> type[Wire]:
    return Wire
