"""The host's side of a directory listing (agent/ops.py LIST): entries one at a time.

The agent sends the listing as JSON lines in data frames, under the link's flow control,
so a listing of any length costs the host a window, not the whole directory. Everything in
it comes from inside the sandbox: each line and each field is bounded and checked, and a
listing that breaks the rules ends with an error instead of growing anything.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from workspace_server.agent import ops, wire
from workspace_server.agent_link.connection import AgentStream, error_from_reply
from workspace_server.agent_link.streams import map_disconnect
from workspace_server.domain.errors import AgentNotConnected

# A line holds one file's info: the listed path (at most 4 KiB, as the API takes it) joined
# with a name (NAME_MAX: 255 bytes), each byte escaped at most six-fold by JSON. Longer is an
# agent that misbehaves.
MAX_ENTRY_LINE = 64 * 1024
MAX_NAME = 255
MAX_PATH = 4096 + 1 + MAX_NAME
MAX_FIELD = 64  # modified_at, mode
FILE_TYPES = frozenset({"file", "directory", "symlink", "other"})
MALFORMED = "the sandbox agent sent a malformed directory listing"


class DirectoryListing:
    """A listing in progress: iterate for entries (FileInfo dicts); `close` ends it early."""

    def __init__(self, sandbox_id: str, stream: AgentStream) -> None:
        self.sandbox_id = sandbox_id
        self._stream = stream

    async def entries(self) -> AsyncIterator[dict[str, Any]]:
        """Every entry, checked. A broken or lost listing raises AgentNotConnected."""
        partial = b""
        try:
            with map_disconnect(self.sandbox_id, "the sandbox agent disconnected during the listing"):
                while True:
                    kind, payload = await self._stream.recv()
                    if kind == wire.OUT:
                        *lines, partial = (partial + payload).split(b"\n")
                        if len(partial) > MAX_ENTRY_LINE:
                            raise AgentNotConnected(self.sandbox_id, MALFORMED)
                        for entry in checked_entries(self.sandbox_id, lines):
                            yield entry
                    elif kind == wire.MSG and payload.get("type") == ops.ERROR:
                        raise error_from_reply(payload)
                    elif kind == wire.MSG:
                        if payload.get("type") != ops.END or partial:
                            raise AgentNotConnected(self.sandbox_id, MALFORMED)
                        return
                    elif kind == wire.CLOSE:
                        raise AgentNotConnected(self.sandbox_id, "the sandbox agent ended the listing early")
        finally:
            self.close()

    def close(self) -> None:
        self._stream.close()


def checked_entries(sandbox_id: str, lines: list[bytes]) -> list[dict[str, Any]]:
    """Lines of the listing as FileInfo dicts (decoded as one JSON array: a tenth of the cost
    of a decode per line); anything else ends the listing."""
    if not lines:
        return []
    if any(len(line) > MAX_ENTRY_LINE for line in lines):
        raise AgentNotConnected(sandbox_id, MALFORMED)
    try:
        decoded = json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        raise AgentNotConnected(sandbox_id, MALFORMED) from None
    if len(decoded) != len(lines):  # a line holding more than one value
        raise AgentNotConnected(sandbox_id, MALFORMED)
    return [checked_fields(sandbox_id, raw) for raw in decoded]


def checked_entry(sandbox_id: str, line: bytes) -> dict[str, Any]:
    """One line of the listing as a FileInfo dict; anything else ends the listing."""
    return checked_entries(sandbox_id, [line])[0]


def checked_fields(sandbox_id: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise AgentNotConnected(sandbox_id, MALFORMED)
    name, path, kind, size = raw.get("name"), raw.get("path"), raw.get("type"), raw.get("size")
    modified_at, mode = raw.get("modified_at"), raw.get("mode")
    valid = (
        isinstance(name, str)
        and 0 < len(name) <= MAX_NAME
        and isinstance(path, str)
        and 0 < len(path) <= MAX_PATH
        and kind in FILE_TYPES
        and isinstance(size, int)
        and not isinstance(size, bool)
        and 0 <= size < 2**63
        and (modified_at is None or (isinstance(modified_at, str) and len(modified_at) <= MAX_FIELD))
        and (mode is None or (isinstance(mode, str) and len(mode) <= MAX_FIELD))
    )
    if not valid:
        raise AgentNotConnected(sandbox_id, MALFORMED)
    return {"name": name, "path": path, "type": kind, "size": size, "modified_at": modified_at, "mode": mode}
