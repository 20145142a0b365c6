"""What the services make of an agent's event stream for a client: events with queued
output coalesced, UTF-8 decoded without splitting a character, keepalive ticks, and one
shape for how a stream can end badly."""

from __future__ import annotations

import asyncio
import codecs
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, TypeVar

from workspace_server.agent_link.streams import CommandEnded, CommandFailed, CommandOutput, EventStream
from workspace_server.domain.errors import AgentNotConnected

COALESCE_BYTES = 1024 * 1024

Extra = TypeVar("Extra")


@dataclass
class ProcessEvent:
    type: str  # start | stdout | stderr | exit | error | dropped (and a watch's kinds)
    data: dict[str, Any]


async def coalesced(
    stream: EventStream[Extra], keepalive: float
) -> AsyncGenerator[Extra | CommandOutput | CommandFailed | CommandEnded | None, None]:
    """The stream's events, output already queued for one stream joined into one event (up
    to COALESCE_BYTES: fewer, larger events); None when nothing came for `keepalive` s.
    A dropped link raises AgentNotConnected."""
    pending: Extra | CommandOutput | CommandFailed | CommandEnded | None = None
    while True:
        if pending is not None:
            event, pending = pending, None
        elif (ready := stream.next_nowait()) is not None:
            event = ready
            # Output may flow without this task ever suspending, and a client that left
            # is only noticed by cancelling us: give the loop that chance.
            await asyncio.sleep(0)
        else:
            try:
                # asyncio.timeout, not wait_for: in 3.11 wait_for can swallow a
                # cancellation that races a completed recv().
                async with asyncio.timeout(keepalive):
                    event = await stream.next()
            except TimeoutError:
                yield None
                continue
        if isinstance(event, CommandOutput):
            pieces, size = [event.data], len(event.data)
            while size < COALESCE_BYTES and (more := stream.next_nowait()) is not None:
                if not isinstance(more, CommandOutput) or more.name != event.name:
                    pending = more
                    break
                pieces.append(more.data)
                size += len(more.data)
            if len(pieces) > 1:
                event = CommandOutput(event.name, b"".join(pieces))
        yield event


def stream_error(end: CommandFailed | CommandEnded | AgentNotConnected) -> ProcessEvent:
    """The client's `error` event for a stream that ended without its normal end."""
    if isinstance(end, CommandFailed):
        return ProcessEvent("error", {"code": end.error.code, "message": end.error.message})
    if isinstance(end, AgentNotConnected):
        return ProcessEvent("error", {"code": end.code, "message": end.message})
    return ProcessEvent("error", {"code": "INTERNAL", "message": "the agent ended the stream"})


class Utf8Stream:
    """Decodes a byte stream without splitting a character across events."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes) -> str:
        return str(self._decoder.decode(data))

    def flush(self) -> str:
        return str(self._decoder.decode(b"", final=True))

    def pending(self) -> int:
        """Bytes held back: the start of a character that is not complete yet."""
        held: bytes = self._decoder.getstate()[0]
        return len(held)
