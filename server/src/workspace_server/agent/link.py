"""The host connection: one socket multiplexing many streams (framing in wire.py)."""

from __future__ import annotations

import queue
import socket
import threading

from . import ops, wire
from .errors import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, Optional, Tuple


class Stream:
    """One logical stream on the host link."""

    def __init__(self, link: "Link", stream_id: int) -> None:
        self.link = link
        self.id = stream_id
        self.inbox: "queue.Queue[Tuple[str, Any]]" = queue.Queue()
        self._credit = wire.WINDOW
        self._unacked_frames = 0  # data frames sent since the last credit frame
        self._cond = threading.Condition()
        self.closed = False

    # sending ------------------------------------------------------------
    def send(self, message: Dict[str, Any]) -> None:
        self.link.send(wire.encode_json(self.id, wire.MSG, message))

    def send_data(self, kind: int, data: bytes) -> bool:
        """Send data within the flow-control window; False once the stream is gone."""
        view = memoryview(data)
        while view:
            with self._cond:
                while (self._credit <= 0 or self._unacked_frames >= wire.MAX_UNACKED_FRAMES) and not self.closed:
                    self._cond.wait()
                if self.closed:
                    return False
                size = min(self._credit, len(view), wire.CHUNK)
                self._credit -= size
                self._unacked_frames += 1
            self.link.send(wire.encode(self.id, kind, bytes(view[:size])))
            view = view[size:]
        return True

    def finish(self, message: Optional[Dict[str, Any]] = None) -> None:
        close = wire.encode(self.id, wire.CLOSE)
        if message is not None:  # one write for both frames
            close = wire.encode_json(self.id, wire.MSG, message) + close
        self.link.send(close)
        self.forget()

    def forget(self) -> None:
        """Drop the stream from the link's table (later frames for it are ignored)."""
        self.link.forget(self.id)

    # receiving ------------------------------------------------------------
    def add_credit(self, amount: int) -> None:
        with self._cond:
            self._credit += amount
            self._unacked_frames = 0
            self._cond.notify_all()

    def grant(self, amount: int) -> None:
        self.link.send(wire.encode_credit(self.id, amount))

    def peer_closed(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
        self.inbox.put(("closed", None))


class Link:
    """The host connection: a reader loop that dispatches frames to streams.

    `start_operation(stream, request)` is called for every OPEN frame; it must hand the
    operation to another thread, and raises RuntimeError when no thread can be had."""

    def __init__(self, sock: socket.socket, start_operation: "Callable[[Stream, Dict[str, Any]], None]") -> None:
        self.sock = sock
        self._start_operation = start_operation
        self._send_lock = threading.Lock()
        self._streams: Dict[int, Stream] = {}
        self._streams_lock = threading.Lock()
        self.alive = True

    def send(self, frame: bytes) -> None:
        try:
            with self._send_lock:
                self.sock.sendall(frame)
        except OSError:
            self.alive = False

    def forget(self, stream_id: int) -> None:
        with self._streams_lock:
            self._streams.pop(stream_id, None)

    def _recv_exact(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = self.sock.recv(min(size, 1 << 20))
            if not chunk:
                raise EOFError
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def serve(self) -> None:
        try:
            while True:
                length, stream_id, kind = wire.decode_header(self._recv_exact(wire.HEADER.size))
                payload = self._recv_exact(length) if length else b""
                self._dispatch(stream_id, kind, payload)
        except (EOFError, OSError, wire.ProtocolError) as exc:
            log("host link closed: %s" % (exc or type(exc).__name__))
        finally:
            self.alive = False
            with self._streams_lock:
                streams = list(self._streams.values())
                self._streams.clear()
            for stream in streams:
                stream.peer_closed()
            try:
                self.sock.close()
            except OSError:
                pass

    def _dispatch(self, stream_id: int, kind: int, payload: bytes) -> None:
        if kind == wire.OPEN:
            stream = Stream(self, stream_id)
            with self._streams_lock:
                self._streams[stream_id] = stream
            request = wire.decode_json(payload)
            try:
                self._start_operation(stream, request)
            except RuntimeError:
                # No thread to be had: the pids limit is full (a fork bomb). Refuse this one
                # operation; the link and the sandbox carry on.
                stream.finish(
                    ops.error("RESOURCE_EXHAUSTED", "the sandbox reached its pids limit; kill some processes and retry")
                )
            return
        with self._streams_lock:
            stream_or_none = self._streams.get(stream_id)
        if stream_or_none is None:
            return  # late frame for a finished stream
        if kind == wire.MSG:
            stream_or_none.inbox.put(("msg", wire.decode_json(payload)))
        elif kind == wire.IN:
            stream_or_none.inbox.put(("data", payload))
        elif kind == wire.CREDIT:
            stream_or_none.add_credit(wire.decode_credit(payload))
        elif kind == wire.CLOSE:
            stream_or_none.peer_closed()
        else:
            raise wire.ProtocolError("unexpected frame kind %d from host" % kind)
