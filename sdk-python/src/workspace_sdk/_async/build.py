"""A template build followed to its end: its log streamed to a callback over SSE, resumed
from the last byte offset if the connection drops, then its record."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx

from .._exceptions import WorkspaceConnectionError, error_from_envelope
from .._primitives import async_sleep
from .._protocol import build as protocol
from .._sse import SSEDecoder
from ..types import Build
from ._api_client import AsyncAPIClient

# The server sends a keepalive comment every few seconds: a read this long means it is gone.
LOG_TIMEOUT = httpx.Timeout(60.0, read=120.0)
RECONNECTS = 5


async def context_chunks(root: str, extra: dict[str, bytes]) -> AsyncIterator[bytes]:
    """The build context as a tar, streamed (local reads block briefly, as for uploads)."""
    for chunk in protocol.context_tar(root, extra):
        if chunk:
            yield chunk


async def follow(api: AsyncAPIClient, build: Build, on_log: protocol.LogCallback | None) -> Build:
    """Stream the build's log to `on_log` until the build ends; its final record."""
    offset = 0
    failures = 0
    while True:
        try:
            ended, offset = await _read_log(api, build.id, offset, on_log)
        except WorkspaceConnectionError:
            failures += 1
            if failures > RECONNECTS:
                raise
            await async_sleep(min(0.2 * 2**failures, 5.0))
            continue
        if ended is not None:
            return ended
        failures = 0


async def _read_log(
    api: AsyncAPIClient, build_id: str, offset: int, on_log: protocol.LogCallback | None
) -> tuple[Build | None, int]:
    """Read the log from `offset`: (the final record, if the stream got to it; the offset
    reached)."""
    response = await api.open_stream(protocol.build_logs_request(build_id, offset), timeout=LOG_TIMEOUT)
    decoder = SSEDecoder()
    try:
        async for chunk in response.aiter_bytes():
            for event in decoder.feed(chunk):
                data = json.loads(event.data)
                if event.event == "log":
                    offset = int(data["end"])
                    if on_log is not None:
                        on_log(str(data["text"]))
                elif event.event == "end":
                    return protocol.parse_build(data), offset
    except httpx.TransportError as exc:
        raise WorkspaceConnectionError(f"the build log stream broke: {exc}") from exc
    finally:
        await response.aclose()
    return None, offset


def raise_if_failed(build: Build) -> None:
    if build.state != "ready":
        raise error_from_envelope(protocol.failure_envelope(build))
