"""Host side of the agent link: one multiplexed Unix-socket connection per sandbox."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import logging
import os
import stat
from collections.abc import Awaitable, Callable
from typing import Any

from workspace_server.agent import handshake, ops, wire
from workspace_server.agent_link.address import AgentAddress, TcpAgentAddress
from workspace_server.agent_link.tcp import open_tcp_link
from workspace_server.domain.errors import WorkspaceError

log = logging.getLogger(__name__)

WRITE_HIGH_WATER = 4 * 1024 * 1024
# The agent runs inside the sandbox, so everything it sends is untrusted: a stream may not
# hold more than its window of unread data, nor pile up control messages.
MAX_BUFFERED_BYTES = wire.WINDOW + wire.CHUNK
MAX_PENDING_FRAMES = 4096
MAX_PENDING_MESSAGE_BYTES = 16 * 1024 * 1024  # unread control messages (JSON) on one stream


class AgentDisconnected(Exception):
    """The link to the agent is gone."""


class StreamEnded(Exception):
    """The agent finished the stream while we were still sending on it."""


class AgentOpError(WorkspaceError):
    """The agent refused or failed an operation; carries the agent's error code."""


def error_from_reply(reply: dict[str, Any]) -> AgentOpError:
    """The domain error for an agent's error reply (ops.error): its code is one of docs/api.md's."""
    return AgentOpError(
        str(reply.get("message", "agent error")),
        code=str(reply.get("code", "INTERNAL")),
        **dict(reply.get("details") or {}),
    )


Frame = tuple[int, Any]  # (kind, dict for MSG / bytes for OUT and ERR / None for CLOSE)
_DISCONNECTED: Frame = (-1, None)


class AgentStream:
    """One operation's stream. Receiving data grants the agent more credit."""

    def __init__(self, connection: AgentConnection, stream_id: int) -> None:
        self._connection = connection
        self.id = stream_id
        self._frames: asyncio.Queue[Frame] = asyncio.Queue()
        self._send_credit = wire.WINDOW
        self._credit_changed = asyncio.Event()
        self._consumed = 0
        self._buffered = 0
        self._message_sizes: collections.deque[int] = collections.deque()  # unread MSG frames, in order
        self._message_bytes = 0
        self.finished = False  # the agent sent CLOSE
        self.closed = False  # we sent CLOSE

    # -- used by the connection's reader
    def deliver(self, frame: Frame, size: int = 0) -> None:
        """Queue a frame; `size` is a MSG frame's payload size (its JSON is decoded already)."""
        if frame[0] == wire.MSG:
            self._message_sizes.append(size)
            self._message_bytes += size
            if self._message_bytes > MAX_PENDING_MESSAGE_BYTES:
                raise wire.ProtocolError(f"stream {self.id}: too many unread messages from the agent")
        elif frame[0] == wire.CLOSE:
            self.finished = True
            self._credit_changed.set()  # a sender waiting for credit must learn the stream ended
        elif frame[0] in (wire.OUT, wire.ERR):
            self._buffered += len(frame[1])
            if self._buffered > MAX_BUFFERED_BYTES:
                raise wire.ProtocolError(f"stream {self.id}: the agent ignored flow control")
        if self._frames.qsize() >= MAX_PENDING_FRAMES:
            raise wire.ProtocolError(f"stream {self.id}: too many unread frames from the agent")
        self._frames.put_nowait(frame)

    def add_credit(self, amount: int) -> None:
        self._send_credit += amount
        self._credit_changed.set()

    def disconnect(self) -> None:
        self._frames.put_nowait(_DISCONNECTED)
        self._credit_changed.set()

    # -- used by services
    async def recv(self) -> Frame:
        """Next frame: (MSG, dict), (OUT|ERR, bytes) or (CLOSE, None).

        Raises AgentDisconnected if the link dropped."""
        return self._take(await self._frames.get())

    def recv_nowait(self) -> Frame | None:
        """The next frame if one is already here (lets callers coalesce output)."""
        if self._frames.empty():
            return None
        return self._take(self._frames.get_nowait())

    def _take(self, frame: Frame) -> Frame:
        if frame is _DISCONNECTED:
            self._frames.put_nowait(_DISCONNECTED)  # later calls see it too
            raise AgentDisconnected
        if frame[0] == wire.MSG:
            self._message_bytes -= self._message_sizes.popleft()
        elif frame[0] in (wire.OUT, wire.ERR):
            self._buffered -= len(frame[1])
            self._consumed += len(frame[1])
            # Also when we caught up: the agent holds back small frames until it hears from
            # us (wire.MAX_UNACKED_FRAMES), and a trickle of them never adds up to a quarter.
            if self._consumed >= wire.WINDOW // 4 or (self._frames.empty() and self._consumed):
                self._connection.write(wire.encode_credit(self.id, self._consumed))
                self._consumed = 0
        return frame

    async def recv_message(self) -> dict[str, Any]:
        """The next control message; an agent error becomes AgentOpError."""
        while True:
            kind, payload = await self.recv()
            if kind == wire.MSG:
                if payload.get("type") == ops.ERROR:
                    raise error_from_reply(payload)
                return dict(payload)
            if kind == wire.CLOSE:
                raise AgentOpError("agent closed the stream without an answer", code="INTERNAL")

    async def send_message(self, message: dict[str, Any]) -> None:
        self._connection.check_alive()
        self._connection.write(wire.encode_json(self.id, wire.MSG, message))
        await self._connection.drain()

    async def send_data(self, data: bytes) -> None:
        """Send within the window. Raises StreamEnded if the agent ended the stream (its
        answer, often an error such as DISK_QUOTA_EXCEEDED, is then waiting in recv)."""
        view = memoryview(data)
        while view:
            while self._send_credit <= 0 and not self.finished:
                self._connection.check_alive()
                self._credit_changed.clear()
                await self._credit_changed.wait()
            self._connection.check_alive()
            if self.finished:
                raise StreamEnded
            size = min(self._send_credit, len(view), wire.CHUNK)
            self._send_credit -= size
            self._connection.write(wire.HEADER.pack(size, self.id, wire.IN))
            self._connection.write(view[:size])  # no copy: the transport takes the slice as is
            view = view[size:]
            await self._connection.drain()

    def close(self) -> None:
        """Tell the agent we are done (cancels the operation if it still runs)."""
        if not self.closed:
            self.closed = True
            if not self.finished and self._connection.alive:
                self._connection.write(wire.encode(self.id, wire.CLOSE))
            self._connection.forget(self.id)


async def open_socket_safely(socket_path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to the agent's socket without following a symlink.

    The socket's directory is writable from inside the sandbox, so its last component
    is untrusted: code there could swap the socket for a symlink to a host socket. We
    open the name itself (O_NOFOLLOW), check it is a socket, and connect through the
    descriptor, so the host never follows a path the sandbox controls."""
    fd = os.open(socket_path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise AgentDisconnected(f"{socket_path} is not a socket")
        return await asyncio.open_unix_connection(f"/proc/self/fd/{fd}", limit=2**22)
    finally:
        os.close(fd)


class AgentConnection:
    """One multiplexed link to a sandbox's agent: a reader task dispatches the agent's frames
    to their streams (every frame checked: the agent is untrusted), and `open` starts an
    operation's stream. A dropped link is reported once, to `on_disconnect`."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        on_disconnect: Callable[[], Awaitable[None]] | None,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._streams: dict[int, AgentStream] = {}
        self._next_id = 1
        self.protocol_error: str | None = None  # why the link was dropped, if the agent broke the protocol
        self._on_disconnect = on_disconnect
        self._drain_lock = asyncio.Lock()
        self.alive = True
        # A fresh context: the link outlives the request that opened it, and its log lines
        # must not carry that request's id.
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop(), context=contextvars.Context())

    @classmethod
    async def connect(
        cls,
        address: AgentAddress | str,
        timeout: float,
        on_disconnect: Callable[[], Awaitable[None]] | None = None,
    ) -> AgentConnection:
        """Connect (a Unix socket path, or a TCP address whose agent must prove its identity),
        retrying while the agent is still starting; then say hello."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                if isinstance(address, TcpAgentAddress):
                    reader, writer = await open_tcp_link(address)
                else:
                    reader, writer = await open_socket_safely(str(address))
                break
            except handshake.HandshakeError as exc:  # something answered, and it is not this sandbox's agent
                raise AgentDisconnected(str(exc)) from None
            except (FileNotFoundError, ConnectionRefusedError, AgentDisconnected, OSError, asyncio.IncompleteReadError):
                if loop.time() >= deadline:
                    raise AgentDisconnected(f"agent at {address} did not come up") from None
                await asyncio.sleep(0.002 if not isinstance(address, TcpAgentAddress) else 0.02)
        connection = cls(reader, writer, on_disconnect)
        try:
            await asyncio.wait_for(connection.request(ops.hello()), max(0.1, deadline - loop.time()))
        except (asyncio.TimeoutError, AgentDisconnected, AgentOpError):
            await connection.close()
            raise AgentDisconnected("agent did not answer hello") from None
        return connection

    def set_disconnect_handler(self, on_disconnect: Callable[[], Awaitable[None]] | None) -> None:
        """Who hears that the link dropped (a pool sandbox changes hands when it is claimed)."""
        self._on_disconnect = on_disconnect

    def check_alive(self) -> None:
        if not self.alive:
            raise AgentDisconnected

    def write(self, frame: bytes | memoryview) -> None:
        if self.alive:
            self._writer.write(frame)

    async def drain(self) -> None:
        if self._writer.transport.get_write_buffer_size() > WRITE_HIGH_WATER:
            async with self._drain_lock:
                with contextlib.suppress(ConnectionError):
                    await self._writer.drain()

    def forget(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)

    async def open(self, request: dict[str, Any]) -> AgentStream:
        self.check_alive()
        stream = AgentStream(self, self._next_id)
        self._next_id += 1
        self._streams[stream.id] = stream
        self.write(wire.encode_json(stream.id, wire.OPEN, request))
        await self.drain()
        return stream

    async def request(self, request: dict[str, Any]) -> dict[str, Any]:
        """A one-answer operation (stat, mkdir, signal...)."""
        stream = await self.open(request)
        try:
            return await stream.recv_message()
        finally:
            stream.close()

    async def _read_loop(self) -> None:
        try:
            while True:
                header = await self._reader.readexactly(wire.HEADER.size)
                length, stream_id, kind = wire.decode_header(header)
                payload = await self._reader.readexactly(length) if length else b""
                stream = self._streams.get(stream_id)
                if stream is None:
                    continue
                if kind == wire.MSG:
                    stream.deliver((kind, wire.decode_json(payload)), len(payload))
                elif kind in (wire.OUT, wire.ERR):
                    stream.deliver((kind, payload))
                elif kind == wire.CREDIT:
                    stream.add_credit(wire.decode_credit(payload))
                elif kind == wire.CLOSE:
                    stream.deliver((kind, None))
                    self._streams.pop(stream_id, None)
                else:
                    raise wire.ProtocolError(f"unexpected frame kind {kind} from agent")
        except wire.ProtocolError as exc:
            # A hostile (or broken) agent: the link is never trusted again (see SandboxService).
            self.protocol_error = str(exc)
            log.warning("agent link closed: the agent broke the protocol: %s", exc)
        except (asyncio.IncompleteReadError, ConnectionError, OSError) as exc:
            log.info("agent link closed: %r", exc)
        except asyncio.CancelledError:
            pass
        finally:
            await self._lost()

    async def _lost(self) -> None:
        if not self.alive:
            return
        self.alive = False
        for stream in list(self._streams.values()):
            stream.disconnect()
        self._streams.clear()
        with contextlib.suppress(Exception):
            self._writer.close()
        if self._on_disconnect is not None:
            await self._on_disconnect()

    async def close(self) -> None:
        """Close without reporting a disconnect (we chose to go)."""
        self._on_disconnect = None
        self._reader_task.cancel()
        with contextlib.suppress(BaseException):
            await self._reader_task
        await self._lost()
