"""The host side of the agent link against a fake (hostile) agent."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from workspace_server.agent import wire
from workspace_server.agent_link.connection import (
    MAX_PENDING_MESSAGE_BYTES,
    AgentConnection,
    AgentDisconnected,
    AgentStream,
)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, int, bytes]:
    length, stream_id, kind = wire.decode_header(await reader.readexactly(wire.HEADER.size))
    return stream_id, kind, await reader.readexactly(length)


async def hello_then(behaviour: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream_id, _, _ = await read_frame(reader)
        writer.write(wire.encode_json(stream_id, wire.MSG, {"type": "ok"}) + wire.encode(stream_id, wire.CLOSE))
        await behaviour(reader, writer)

    return handler


async def serve(tmp_path: Path, handler: Handler) -> tuple[asyncio.AbstractServer, str]:
    path = str(tmp_path / "agent.sock")
    return await asyncio.start_unix_server(handler, path), path


async def test_symlinked_socket_is_refused(tmp_path: Path) -> None:
    async def idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()

    server, path = await serve(tmp_path, await hello_then(idle))
    link = tmp_path / "link.sock"
    os.symlink(path, link)
    async with server:
        with pytest.raises(AgentDisconnected):
            await AgentConnection.connect(str(link), timeout=0.3)
        connection = await AgentConnection.connect(path, timeout=2)
        assert connection.alive
        await connection.close()


async def cut_off_by_flood(
    tmp_path: Path, frame: Callable[[int], bytes], count: int, request: dict[str, Any]
) -> AgentStream:
    """Open a stream on a fake agent that sends `count` copies of frame(stream id) at once;
    the link must drop. Returns the stream, for what it says afterwards."""
    lost = asyncio.Event()

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream_id, _, _ = await read_frame(reader)
        for _ in range(count):
            writer.write(frame(stream_id))
        await writer.drain()
        await reader.read()

    async def on_lost() -> None:
        lost.set()

    server, path = await serve(tmp_path, await hello_then(flood))
    async with server:
        connection = await AgentConnection.connect(path, timeout=2, on_disconnect=on_lost)
        stream = await connection.open(request)
        await asyncio.wait_for(lost.wait(), 5)
        assert not connection.alive
    return stream


async def test_agent_ignoring_flow_control_is_cut_off(tmp_path: Path) -> None:
    chunk = b"x" * wire.CHUNK
    stream = await cut_off_by_flood(
        tmp_path,
        lambda stream_id: wire.encode(stream_id, wire.OUT, chunk),
        wire.WINDOW // wire.CHUNK + 4,
        {"op": "read", "path": "/x"},
    )
    with pytest.raises(AgentDisconnected):
        while True:
            await stream.recv()


BROKEN_FRAMES: dict[str, Callable[[int], bytes]] = {
    "garbage-json": lambda stream_id: wire.encode(stream_id, wire.MSG, b"{not json"),
    # Announces more than a frame may hold: refused before anything is buffered.
    "oversized-header": lambda stream_id: wire.HEADER.pack(wire.MAX_FRAME + 1, stream_id, wire.OUT),
}


@pytest.mark.parametrize("broken", BROKEN_FRAMES)
async def test_a_frame_that_breaks_the_protocol_drops_the_link(tmp_path: Path, broken: str) -> None:
    async def send_broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream_id, _, _ = await read_frame(reader)
        writer.write(BROKEN_FRAMES[broken](stream_id))
        await reader.read()

    server, path = await serve(tmp_path, await hello_then(send_broken))
    async with server:
        connection = await AgentConnection.connect(path, timeout=2)
        stream = await connection.open({"op": "stat", "path": "/"})
        with pytest.raises(AgentDisconnected):
            await asyncio.wait_for(stream.recv_message(), 5)
        assert not connection.alive


async def test_agent_flooding_unread_messages_is_cut_off(tmp_path: Path) -> None:
    padding = "x" * (wire.CHUNK - 64)
    await cut_off_by_flood(  # a spawn's stream, never read
        tmp_path,
        lambda stream_id: wire.encode_json(stream_id, wire.MSG, {"type": "started", "padding": padding}),
        MAX_PENDING_MESSAGE_BYTES // wire.CHUNK + 2,
        {"op": "spawn", "argv": ["true"]},
    )


async def test_frames_reach_their_streams_in_order_however_the_bytes_arrive(tmp_path: Path) -> None:
    sizes = [0, 1, 9, 1000, wire.CHUNK, 70_000, wire.CHUNK, 3, wire.CHUNK - 1] * 3

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stream_id, _, _ = await read_frame(reader)
        data = b"".join(wire.encode(stream_id, wire.OUT, bytes([i % 251]) * size) for i, size in enumerate(sizes))
        data += wire.encode(stream_id, wire.CLOSE)
        position, step = 0, 1
        while position < len(data):  # pieces of 1, 2, 4... bytes up to 128 KiB, then again
            writer.write(data[position : position + step])
            await writer.drain()
            position += step
            step = 1 if step >= 128 * 1024 else step * 2
        await reader.read()

    server, path = await serve(tmp_path, await hello_then(trickle))
    async with server:
        connection = await AgentConnection.connect(path, timeout=2)
        stream = await connection.open({"op": "read", "path": "/x"})
        received = []
        while True:
            kind, payload = await asyncio.wait_for(stream.recv(), 5)
            if kind == wire.CLOSE:
                break
            received.append(payload)
        assert received == [bytes([i % 251]) * size for i, size in enumerate(sizes)]
        await connection.close()
