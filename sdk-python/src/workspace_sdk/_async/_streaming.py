"""Base for objects that wrap one long-lived streamed HTTP response.

The request is sent lazily (on first iteration, on ``async with``, or on an explicit open),
so a stream can be created in an expression like ``async for x in client...stream(...)``.
The response is closed exactly once: when the stream ends, when the caller leaves the
``async with`` block or calls ``aclose()``, or when the iterator is dropped after a ``break``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from types import TracebackType
from typing import TypeVar

import httpx

from .._exceptions import error_from_transport
from .._protocol import ApiRequest
from ._api_client import AsyncAPIClient

_StreamT = TypeVar("_StreamT", bound="AsyncResponseStream")


class AsyncResponseStream:
    """Owns at most one streamed response; subclasses decide how to read its body."""

    def __init__(
        self,
        api: AsyncAPIClient,
        request: ApiRequest,
        timeout: httpx.Timeout,
        chunk_size: int | None = None,
    ) -> None:
        self._api = api
        self._request = request
        self._timeout = timeout
        self._chunk_size = chunk_size
        self._response: httpx.Response | None = None
        self._body: AsyncIterator[bytes] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once the underlying HTTP response has been released."""
        return self._closed

    async def _open_response(self) -> httpx.Response:
        """Send the request if that has not happened yet (idempotent)."""
        if self._response is not None:
            return self._response
        if self._closed:
            raise RuntimeError("this stream is closed; start a new one")
        self._response = await self._api.open_stream(self._request, timeout=self._timeout)
        self._body = self._response.aiter_bytes(self._chunk_size)
        return self._response

    async def _read_chunk(self) -> bytes | None:
        """Next piece of the body, or ``None`` at its end."""
        if self._body is None or self._response is None:
            return None
        try:
            return await anext(self._body, None)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, str(self._response.request.url)) from exc

    async def aclose(self) -> None:
        """Release the HTTP response (idempotent). For a process stream this disconnects,
        and the server kills the process."""
        self._closed = True
        response, self._response, self._body = self._response, None, None
        if response is not None:
            await response.aclose()

    async def _enter(self) -> None:
        await self._open_response()

    async def __aenter__(self: _StreamT) -> _StreamT:
        try:
            await self._enter()
        except BaseException:
            await self.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
