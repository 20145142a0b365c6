"""File watching: inotify inside the sandbox (the agent's `watch` operation), as events.

The agent sends events as JSON lines on the stream's data channel, so they are under flow
control: a client that reads slowly stalls only its own watch, whose kernel queue then
overflows, and that is reported as an `overflow` event instead of growing any buffer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from workspace_server.agent_link.background import WatchStream
from workspace_server.agent_link.streams import CommandFailed
from workspace_server.domain.errors import AgentNotConnected
from workspace_server.domain.paths import sandbox_path
from workspace_server.services.event_streams import ProcessEvent
from workspace_server.services.sandboxes import SandboxService

WATCH_EVENT_TYPES = frozenset({"create", "write", "remove", "rename", "chmod", "overflow"})
MAX_EVENT_LINE = 64 * 1024  # a path is at most 4 KiB: a longer line is a misbehaving agent
MAX_EVENT_PATH = 4096 + 256  # the watched path (4 KiB at most) and a name; longer: dropped


class WatchService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self.sandboxes = sandboxes

    async def watch(
        self, sandbox_id: str, path: str, recursive: bool, keepalive: float
    ) -> AsyncIterator[ProcessEvent | None]:
        """Errors (a missing path...) raise here; then `ready` and the changes. None is a
        keepalive tick. Closing the iterator removes the watch."""
        target = sandbox_path(path)
        stream = await self.sandboxes.agent(sandbox_id).watch(target, recursive)
        try:
            await stream.ready()
        except BaseException:
            stream.close()
            raise
        return _events(stream, target, keepalive)


async def _events(stream: WatchStream, path: str, keepalive: float) -> AsyncIterator[ProcessEvent | None]:
    partial = b""
    try:
        yield ProcessEvent("ready", {"path": path})
        while True:
            try:
                async with asyncio.timeout(keepalive):
                    piece = await stream.next()
            except TimeoutError:
                yield None
                continue
            if isinstance(piece, bytes):
                *lines, partial = (partial + piece).split(b"\n")
                if len(partial) > MAX_EVENT_LINE:
                    yield ProcessEvent("error", {"code": "INTERNAL", "message": "the agent sent a malformed event"})
                    return
                for line in lines:
                    event = parse_event(line)
                    if event is not None:
                        yield event
            elif isinstance(piece, CommandFailed):
                yield ProcessEvent("error", {"code": piece.error.code, "message": piece.error.message})
                return
            else:
                yield ProcessEvent("error", {"code": "INTERNAL", "message": "the agent ended the watch"})
                return
    except AgentNotConnected as exc:
        yield ProcessEvent("error", {"code": exc.code, "message": exc.message})
    finally:
        stream.close()


def parse_event(line: bytes) -> ProcessEvent | None:
    """One JSON line from the agent, checked field by field (it comes from inside the sandbox)."""
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    if not isinstance(raw, dict) or raw.get("type") not in WATCH_EVENT_TYPES:
        return None
    kind = str(raw["type"])
    if kind == "overflow":
        return ProcessEvent(kind, {"message": str(raw.get("message", "events were lost"))[:1024]})
    if not isinstance(raw.get("path"), str) or len(raw["path"]) > MAX_EVENT_PATH:
        return None
    data: dict[str, Any] = {"path": raw["path"], "is_dir": raw.get("is_dir") is True}
    if kind == "rename":
        new_path = raw.get("new_path")
        data["new_path"] = new_path if isinstance(new_path, str) and len(new_path) <= MAX_EVENT_PATH else None
    return ProcessEvent(kind, data)
