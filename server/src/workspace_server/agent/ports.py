"""Port tunnels: one TCP connection to a port on the sandbox's own loopback, relayed over a stream.

The agent lives in the sandbox's network namespace, so 127.0.0.1 here is the sandbox's own
loopback: the host reaches a server inside a sandbox that has no network at all, and through
this operation can reach nothing else (the address is fixed; only the port is the host's).
Both directions are flow-controlled: the host's credit paces what we read from the port,
and we grant credit only after the port took the bytes, so a slow end stalls only its tunnel."""

from __future__ import annotations

import socket

from . import ops, wire
from .errors import OpError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict

    from .link import Stream
    from .workers import Workers

CONNECT_TIMEOUT = 5.0
READ_SIZE = 256 * 1024
# Socket calls wake this often to see whether the host closed the tunnel, so a port that
# never reads or never writes cannot hold a thread after the tunnel is gone.
POLL_SECONDS = 1.0


class Ports:
    def __init__(self, workers: "Workers") -> None:
        self.workers = workers

    def op_connect_port(self, stream: "Stream", request: "Dict[str, Any]") -> None:
        port = request.get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise OpError("INVALID_REQUEST", "port must be an integer from 1 to 65535")
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT)
        except OSError as exc:
            reason = exc.strerror or str(exc) or type(exc).__name__
            message = "nothing accepts connections on port %d in the sandbox (%s)" % (port, reason)
            raise OpError("PORT_UNREACHABLE", message, port=port) from None
        sock.settimeout(POLL_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.workers.submit(_port_to_host, sock, stream)
        except RuntimeError:
            sock.close()
            raise OpError("RESOURCE_EXHAUSTED", "the sandbox reached its pids limit") from None
        stream.send(ops.ok())
        _host_to_port(stream, sock)


def _host_to_port(stream: "Stream", sock: socket.socket) -> None:
    """Write what the host sends into the port until the host closes the tunnel."""
    try:
        while True:
            what, value = stream.inbox.get()
            if what == "data":
                _send_all(sock, value, stream)
                stream.grant(len(value))
            elif what == "msg" and value.get("type") == ops.EOF:
                sock.shutdown(socket.SHUT_WR)
            elif what == "closed":
                break
    except OSError:
        stream.finish(ops.eof())  # the port's side is gone: tell the host, end the tunnel
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)  # wakes the reading thread
        except OSError:
            pass
        sock.close()
        stream.peer_closed()  # a reader waiting for credit must stop waiting
        stream.forget()


def _send_all(sock: socket.socket, data: bytes, stream: "Stream") -> None:
    view = memoryview(data)
    while view:
        if stream.closed:
            raise OSError("the host closed the tunnel")
        try:
            view = view[sock.send(view) :]
        except socket.timeout:
            continue


def _port_to_host(sock: socket.socket, stream: "Stream") -> None:
    """Relay what the port sends, within the host's credit; eof() when it stops sending."""
    try:
        while True:
            try:
                data = sock.recv(READ_SIZE)
            except socket.timeout:
                if stream.closed:
                    return
                continue
            if not data:
                break
            if not stream.send_data(wire.OUT, data):
                return
    except OSError:
        pass
    if not stream.closed:
        stream.send(ops.eof())
