"""envd directory watching: filesystem.Filesystem/WatchDir (server stream, the async SDK) and
CreateWatcher / GetWatcherEvents / RemoveWatcher (polling, the sync SDK), on the watch service.
Event names are relative to the watched directory, as envd sends them."""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import secrets
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from workspace_server.api.deps import Services
from workspace_server.e2b.errors import E2BError, end_stream, envelope
from workspace_server.e2b.messages import WatcherRequest
from workspace_server.services.event_streams import ProcessEvent

EVENT_TYPES = {
    "create": "EVENT_TYPE_CREATE",
    "write": "EVENT_TYPE_WRITE",
    "remove": "EVENT_TYPE_REMOVE",
    "rename": "EVENT_TYPE_RENAME",
    "chmod": "EVENT_TYPE_CHMOD",
}
MAX_BUFFERED = 10_000  # per polled watcher: the oldest events go first
MAX_BUFFERED_BYTES = 1024 * 1024  # and at most this many bytes of names (paths are up to 4 KiB)
MAX_WATCHERS = 64  # polled watchers per sandbox
KEEPALIVE = 50.0


def translated(root: str, event: ProcessEvent) -> list[dict[str, Any]]:
    kind = EVENT_TYPES.get(event.type)
    if kind is None:
        return []
    name = posixpath.relpath(event.data["path"], root)
    found = [{"name": name, "type": kind}]
    if event.type == "rename" and event.data.get("new_path"):
        found.append({"name": posixpath.relpath(event.data["new_path"], root), "type": "EVENT_TYPE_CREATE"})
    return found


async def watch_dir(request: Request, svc: Services, sandbox_id: str, root: str, recursive: bool) -> Response:
    events = await svc.watches.watch(sandbox_id, root, recursive, KEEPALIVE)

    async def frames() -> AsyncIterator[bytes]:
        try:
            async for event in events:
                if event is None:
                    yield envelope({"keepalive": {}})
                elif event.type == "ready":
                    yield envelope({"start": {}})  # WatchDirResponse: no `event` wrapper
                elif event.type == "error":
                    yield end_stream(E2BError(503, f"{event.data['code']}: {event.data['message']}"))
                    return
                else:
                    for item in translated(root, event):
                        yield envelope({"filesystem": item})
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(frames(), media_type="application/connect+json")


class BufferedEvents:
    """A polled watcher's events until the next poll: the oldest go first past MAX_BUFFERED
    events or MAX_BUFFERED_BYTES of names."""

    def __init__(self) -> None:
        self._events: deque[dict[str, Any]] = deque()
        self._bytes = 0

    def __bool__(self) -> bool:
        return bool(self._events)

    def extend(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            self._events.append(event)
            self._bytes += len(event["name"])
        while len(self._events) > MAX_BUFFERED or self._bytes > MAX_BUFFERED_BYTES:
            self._bytes -= len(self._events.popleft()["name"])

    def take(self) -> list[dict[str, Any]]:
        events = list(self._events)
        self._events.clear()
        self._bytes = 0
        return events


@dataclass
class Watcher:
    sandbox_id: str
    buffered: BufferedEvents = field(default_factory=BufferedEvents)
    task: asyncio.Task[None] | None = None
    failure: str | None = None


def watchers(request: Request) -> dict[str, Watcher]:
    found: dict[str, Watcher] | None = getattr(request.app.state, "e2b_watchers", None)
    if found is None:
        found = request.app.state.e2b_watchers = {}
    return found


async def create_watcher(http: Request, svc: Services, sandbox_id: str, root: str, recursive: bool) -> dict[str, Any]:
    table = watchers(http)
    for stale in [i for i, w in table.items() if w.task is not None and w.task.done() and not w.buffered]:
        del table[stale]  # ended (its sandbox went away) and drained: nobody can read it any more
    if sum(1 for w in table.values() if w.sandbox_id == sandbox_id) >= MAX_WATCHERS:
        raise E2BError(429, f"at most {MAX_WATCHERS} watchers per sandbox: remove some first")
    events = await svc.watches.watch(sandbox_id, root, recursive, KEEPALIVE)
    watcher = Watcher(sandbox_id)

    async def drain() -> None:
        try:
            async for event in events:
                if event is not None and event.type == "error":
                    watcher.failure = f"{event.data['code']}: {event.data['message']}"
                    return
                if event is not None:
                    watcher.buffered.extend(translated(root, event))
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    watcher.task = asyncio.get_running_loop().create_task(drain())
    watcher_id = "w-" + secrets.token_hex(8)
    table[watcher_id] = watcher
    return {"watcherId": watcher_id}


def _watcher(http: Request, sandbox_id: str, body: bytes) -> tuple[str, Watcher]:
    request = WatcherRequest.model_validate_json(body)
    watcher = watchers(http).get(request.watcher_id)
    if watcher is None or watcher.sandbox_id != sandbox_id:
        raise E2BError(404, f"watcher {request.watcher_id!r} not found")
    return request.watcher_id, watcher


async def get_watcher_events(http: Request, svc: Services, sandbox_id: str, body: bytes) -> dict[str, Any]:
    _, watcher = _watcher(http, sandbox_id, body)
    events = watcher.buffered.take()
    if not events and watcher.failure is not None:
        raise E2BError(503, watcher.failure)
    return {"events": events}


async def remove_watcher(http: Request, svc: Services, sandbox_id: str, body: bytes) -> dict[str, Any]:
    watcher_id, watcher = _watcher(http, sandbox_id, body)
    watchers(http).pop(watcher_id, None)
    if watcher.task is not None:
        watcher.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher.task
    return {}
