"""Limits on HTTP connections, enforced in uvicorn's protocol (below the ASGI app).

What an unauthenticated client can hold must be bounded before the app sees a request:
- the request head (request line + headers) is capped while it arrives: httptools buffers
  header lines without limit, and the app's own 32 KiB check runs only once they are complete;
- a connection gets `head_timeout` seconds to send a complete head (also one that never sends
  a byte), and a request body that stops arriving is cut after `body_idle_timeout`;
- connections are capped in total and per peer address, so open files (each connection is
  one) are never exhausted by clients: the server needs them for sandboxes too.

The counts live in one `ConnectionLimits` shared by the HTTP and WebSocket protocol classes
that `protocol_classes` builds (a WebSocket inherits its HTTP connection's slot).
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from dataclasses import dataclass, field
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

log = logging.getLogger(__name__)

# Open files the server keeps for itself besides client connections: per sandbox an agent
# link and the pipes of host tools while it starts or stops; plus SQLite, logs, listeners.
FILES_PER_SANDBOX = 4
FILES_RESERVED = 256
MIN_CONNECTIONS = 64
DEFAULT_MAX_CONNECTIONS = 4096
WARN_INTERVAL = 10.0


@dataclass
class ConnectionLimits:
    max_connections: int
    max_per_peer: int
    max_head_bytes: int = 64 * 1024
    head_timeout: float = 20.0
    body_idle_timeout: float = 60.0
    open: int = 0
    per_peer: dict[str, int] = field(default_factory=dict)
    holders: dict[int, str] = field(default_factory=dict)  # id(transport) -> peer
    _last_warning: float = 0.0

    def acquire(self, transport: asyncio.BaseTransport) -> str | None:
        """Take a slot for this connection; the reason it is refused otherwise."""
        peer = _peer(transport)
        if self.open >= self.max_connections:
            return f"the server holds its maximum of {self.max_connections} connections"
        if self.per_peer.get(peer, 0) >= self.max_per_peer:
            return f"{peer} holds its maximum of {self.max_per_peer} connections"
        self.open += 1
        self.per_peer[peer] = self.per_peer.get(peer, 0) + 1
        self.holders[id(transport)] = peer
        return None

    def release(self, transport: asyncio.BaseTransport) -> None:
        peer = self.holders.pop(id(transport), None)
        if peer is None:
            return
        self.open -= 1
        left = self.per_peer.get(peer, 1) - 1
        if left > 0:
            self.per_peer[peer] = left
        else:
            self.per_peer.pop(peer, None)

    def warn(self, message: str) -> None:
        """Rate-limited: a flood must not flood the log too."""
        now = time.monotonic()
        if now - self._last_warning >= WARN_INTERVAL:
            self._last_warning = now
            log.warning("refusing connections: %s", message)


def _peer(transport: asyncio.BaseTransport) -> str:
    address = transport.get_extra_info("peername")
    if isinstance(address, (tuple, list)) and address:
        return str(address[0])
    return "unix"


def _envelope_response(status: int, reason: str, code: str, message: str) -> bytes:
    body = json.dumps({"code": code, "message": message, "details": {}}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def protocol_classes(limits: ConnectionLimits) -> tuple[type[asyncio.Protocol], type[asyncio.Protocol]]:
    """uvicorn's httptools and WebSocket protocols, bound to `limits`."""

    class LimitedHttpProtocol(HttpToolsProtocol):
        _head_bytes = 0
        _in_head = True
        _head_timer: asyncio.TimerHandle | None = None
        _body_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            refused = limits.acquire(transport)
            super().connection_made(transport)
            if refused is not None:
                limits.warn(refused)
                transport.write(_envelope_response(429, "Too Many Requests", "RESOURCE_EXHAUSTED", refused))
                transport.close()
                return
            self._arm_head_timer()

        def connection_lost(self, exc: Exception | None) -> None:
            limits.release(self.transport)
            self._cancel_timers()
            super().connection_lost(exc)

        def _cancel_timers(self) -> None:
            for timer in (self._head_timer, self._body_timer):
                if timer is not None:
                    timer.cancel()
            self._head_timer = self._body_timer = None

        def _arm_head_timer(self) -> None:
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(limits.head_timeout, self._head_timed_out)

        def _head_timed_out(self) -> None:
            self._head_timer = None
            if self._in_head and not self.transport.is_closing():
                self.transport.close()  # never sent (all of) a request head

        def _arm_body_timer(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
            self._body_timer = self.loop.call_later(limits.body_idle_timeout, self._body_timed_out)

        def _body_timed_out(self) -> None:
            self._body_timer = None
            if self._in_head or self.transport.is_closing():
                return
            if self.flow is not None and self.flow.read_paused:
                self._arm_body_timer()  # we are not reading: the client is not to blame
                return
            self.transport.close()  # the body stopped arriving: the app sees a disconnect

        def data_received(self, data: bytes) -> None:
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._in_head and self._head_bytes > limits.max_head_bytes and not self.transport.is_closing():
                message = f"the request head exceeds {limits.max_head_bytes} bytes"
                self.transport.write(
                    _envelope_response(431, "Request Header Fields Too Large", "HEADERS_TOO_LARGE", message)
                )
                self.transport.close()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._in_head = True
            self._arm_head_timer()

        def on_headers_complete(self) -> None:
            self._in_head = False
            self._head_bytes = 0
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            self._arm_body_timer()
            super().on_headers_complete()

        def on_body(self, body: bytes) -> None:
            self._arm_body_timer()
            super().on_body(body)

        def on_message_complete(self) -> None:
            if self._body_timer is not None:
                self._body_timer.cancel()
                self._body_timer = None
            super().on_message_complete()
            self._in_head = True
            self._head_bytes = 0

    class LimitedWebSocketProtocol(WebSocketsSansIOProtocol):
        """Holds the slot its HTTP connection took until the socket closes."""

        def connection_lost(self, exc: Exception | None) -> None:
            limits.release(self.transport)
            super().connection_lost(exc)

    return LimitedHttpProtocol, LimitedWebSocketProtocol


@dataclass(frozen=True)
class OpenFiles:
    soft: int
    hard: int
    raised_from: int | None


def raise_open_files_limit() -> OpenFiles:
    """Soft RLIMIT_NOFILE up to the hard limit: the common soft 1024 is far too few for a
    server holding a connection per client and a link per sandbox."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            return OpenFiles(hard, hard, soft)
        except (ValueError, OSError):
            pass
    return OpenFiles(soft if soft != resource.RLIM_INFINITY else hard, hard, None)


def connection_budget(open_files: int, max_sandboxes: int) -> int:
    """How many client connections fit in `open_files` beside what sandboxes need."""
    spare = open_files - FILES_RESERVED - FILES_PER_SANDBOX * max_sandboxes
    return max(MIN_CONNECTIONS, min(DEFAULT_MAX_CONNECTIONS, spare))


def describe(limits: ConnectionLimits, files: OpenFiles, max_sandboxes: int) -> list[tuple[int, str]]:
    """Start-up log lines (level, text) about the open-files limit and the caps."""
    lines: list[tuple[int, str]] = []
    if files.raised_from is not None:
        lines.append((logging.INFO, f"open files limit raised from {files.raised_from} to {files.soft}"))
    needed = FILES_RESERVED + FILES_PER_SANDBOX * max_sandboxes + limits.max_connections
    if files.soft < needed:
        lines.append(
            (
                logging.WARNING,
                f"open files limit {files.soft} is low: {max_sandboxes} sandboxes and {limits.max_connections} "
                f"connections need about {needed}; raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) "
                "or lower --max-sandboxes / --max-connections",
            )
        )
    lines.append(
        (
            logging.INFO,
            f"connections: at most {limits.max_connections} ({limits.max_per_peer} per peer address), "
            f"request head {limits.max_head_bytes} bytes within {limits.head_timeout:g} s, "
            f"request body idle {limits.body_idle_timeout:g} s",
        )
    )
    return lines


def limits_for(
    files: OpenFiles,
    max_sandboxes: int,
    max_connections: int | None,
    max_per_peer: int | None,
    head_timeout: float,
    body_idle_timeout: float,
) -> ConnectionLimits:
    total = max_connections if max_connections is not None else connection_budget(files.soft, max_sandboxes)
    per_peer = max_per_peer if max_per_peer is not None else max(16, total // 4)
    return ConnectionLimits(
        max_connections=total,
        max_per_peer=min(per_peer, total),
        head_timeout=head_timeout,
        body_idle_timeout=body_idle_timeout,
    )


def uvicorn_protocols(limits: ConnectionLimits) -> dict[str, Any]:
    http, ws = protocol_classes(limits)
    return {"http": http, "ws": ws}
