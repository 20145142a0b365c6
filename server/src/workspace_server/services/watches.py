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

from workspace_server.agent import wire
from workspace_server.agent_link.connection import AgentDisconnected, AgentStream
from workspace_server.domain.errors import AgentNotConnected
from workspace_server.domain.paths import sandbox_path
from workspace_server.services.processes import ProcessEvent, agent_failure
from workspace_server.services.sandboxes import SandboxService

WATCH_EVENT_TYPES = frozenset({"create", "write", "remove", "rename", "chmod", "overflow"})
MAX_EVENT_LINE = 64 * 1024  # a path is at most 4 KiB: a longer line is a misbehaving agent


class WatchService:
    def __init__(self, sandboxes: SandboxService) -> None:
        self.sandboxes = sandboxes

    async def watch(
        self, sandbox_id: str, path: str, recursive: bool, keepalive: float
    ) -> AsyncIterator[ProcessEvent | None]:
        """Errors (a missing path...) raise here; then `ready` and the changes. None is a
        keepalive tick. Closing the iterator removes the watch."""
        connection = self.sandboxes.connection(sandbox_id)
        target = sandbox_path(path)
        try:
            stream = await connection.open({"op": "watch", "path": target, "recursive": recursive})
        except AgentDisconnected:
            raise AgentNotConnected(sandbox_id) from None
        try:
            await stream.recv_message()  # "ready" once the watch is in place
        except AgentDisconnected:
            stream.close()
            raise AgentNotConnected(sandbox_id) from None
        except BaseException:
            stream.close()
            raise
        return _events(sandbox_id, stream, target, keepalive)


async def _events(
    sandbox_id: str, stream: AgentStream, path: str, keepalive: float
) -> AsyncIterator[ProcessEvent | None]:
    partial = b""
    try:
        yield ProcessEvent("ready", {"path": path})
        while True:
            try:
                async with asyncio.timeout(keepalive):
                    kind, payload = await stream.recv()
            except TimeoutError:
                yield None
                continue
            if kind == wire.OUT:
                *lines, partial = (partial + payload).split(b"\n")
                if len(partial) > MAX_EVENT_LINE:
                    yield ProcessEvent("error", {"code": "INTERNAL", "message": "the agent sent a malformed event"})
                    return
                for line in lines:
                    event = parse_event(line)
                    if event is not None:
                        yield event
            elif kind == wire.MSG and payload.get("type") == "error":
                failure = agent_failure(payload)
                yield ProcessEvent("error", {"code": failure.code, "message": failure.message})
                return
            elif kind == wire.CLOSE or kind == wire.MSG:
                yield ProcessEvent("error", {"code": "INTERNAL", "message": "the agent ended the watch"})
                return
    except AgentDisconnected:
        yield ProcessEvent(
            "error", {"code": "AGENT_NOT_CONNECTED", "message": f"sandbox {sandbox_id}: the sandbox agent disconnected"}
        )
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
        return ProcessEvent(kind, {"message": str(raw.get("message", "events were lost"))})
    if not isinstance(raw.get("path"), str):
        return None
    data: dict[str, Any] = {"path": raw["path"], "is_dir": raw.get("is_dir") is True}
    if kind == "rename":
        new_path = raw.get("new_path")
        data["new_path"] = new_path if isinstance(new_path, str) else None
    return ProcessEvent(kind, data)
