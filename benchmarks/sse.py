"""An incremental parser for the server's Server-Sent Events (pure: no I/O)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic_core import from_json

# The server's output events: `event: stdout\ndata: {"data": "..."}` (docs/api.md).
OUTPUT_PREFIXES = (("stdout", b"event: stdout\ndata: "), ("stderr", b"event: stderr\ndata: "))


@dataclass
class SseEvent:
    event: str
    data: dict[str, Any]


@dataclass
class SseTally:
    """What a process stream delivered: counts, not contents, so 256 MiB costs no memory."""

    stdout_chars: int = 0
    stderr_chars: int = 0
    events: int = 0
    pid: int | None = None
    exit_code: int | None = None
    error: dict[str, Any] | None = None

    def add(self, event: SseEvent) -> None:
        self.events += 1
        if event.event == "stdout":
            self.stdout_chars += len(event.data.get("data", ""))
        elif event.event == "stderr":
            self.stderr_chars += len(event.data.get("data", ""))
        elif event.event == "start":
            self.pid = int(event.data["pid"])
        elif event.event == "exit":
            self.exit_code = int(event.data["code"])
        elif event.event == "error":
            self.error = event.data

    def add_block(self, block: bytes) -> None:
        """Count one raw event block. An output event's data line is decoded in full
        straight away, with no line splitting, and by pydantic-core (the server's own JSON
        library, ~4x the stdlib's `json.loads` on escaped text): the client is the
        instrument, and its cost per MiB must stay small next to the server's. Anything else
        goes through `parse_event`."""
        for name, prefix in OUTPUT_PREFIXES:
            if block.startswith(prefix):
                try:
                    chars = len(from_json(block[len(prefix) :])["data"])
                except (ValueError, KeyError, TypeError):
                    break  # not one single-line JSON data event: parse it in full below
                self.events += 1
                if name == "stdout":
                    self.stdout_chars += chars
                else:
                    self.stderr_chars += chars
                return
        event = parse_event(block)
        if event is not None:
            self.add(event)


@dataclass
class SseParser:
    """Feed raw body bytes in any chunking; complete events come out."""

    _buffer: bytearray = field(default_factory=bytearray)

    def feed(self, chunk: bytes) -> list[SseEvent]:
        return [event for block in self.blocks(chunk) if (event := parse_event(block)) is not None]

    def blocks(self, chunk: bytes) -> list[bytes]:
        """The complete event blocks (without their blank line) that this chunk finishes."""
        # Resume the search where the last one stopped: one block can span many chunks.
        scan_from = max(0, len(self._buffer) - 1)
        self._buffer += chunk
        blocks: list[bytes] = []
        start = 0
        # Look for single LFs (memchr speed) and test the byte after each: searching for
        # the two-byte b"\n\n" directly is several times slower on long lines.
        position = max(start, scan_from)
        while True:
            end = self._buffer.find(b"\n", position)
            if end < 0 or end + 1 >= len(self._buffer):
                break
            if self._buffer[end + 1] != 0x0A:
                position = end + 1
                continue
            blocks.append(bytes(self._buffer[start:end]))
            start = position = end + 2
        if start:
            del self._buffer[:start]
        return blocks

    @property
    def pending(self) -> int:
        return len(self._buffer)


def parse_event(block: bytes) -> SseEvent | None:
    """One event block (without the blank line); None for comments such as keepalives."""
    name = "message"
    data_lines: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        key, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if key == b"event":
            name = value.decode()
        elif key == b"data":
            data_lines.append(value)
    if not data_lines:
        return None
    data = json.loads(b"\n".join(data_lines))
    return SseEvent(name, data if isinstance(data, dict) else {"value": data})
