"""Relaying one HTTP request or one WebSocket session over a port tunnel (ASGI side).

HTTP/1.1 is spoken to the server inside the sandbox with h11 (one request per tunnel, so
`Connection: close`), and WebSockets with the sans-I/O protocol of the `websockets` library;
neither side's bytes are parsed by hand. Bodies stream in both directions with back-pressure:
nothing is read from the client before the tunnel took the previous piece, and nothing from
the tunnel before the client took the previous piece.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Coroutine, Iterable
from typing import Any

import h11
from starlette.types import Message, Receive, Scope, Send
from websockets.client import ClientProtocol
from websockets.frames import Close, Frame, Opcode
from websockets.http11 import Response as WsResponse
from websockets.uri import parse_uri

from workspace_server.agent_link.tunnel import PortTunnel, TunnelClosed
from workspace_server.api.errors import http_status
from workspace_server.domain.errors import UpstreamTimeout, WorkspaceError

# Hop-by-hop headers (RFC 9110 7.6.1) and the framing h11 sets itself are never forwarded.
HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-authenticate",
    b"proxy-authorization",
    b"proxy-connection",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
}
# The proxy's own server adds these to every response; the upstream's copies would be twins.
SERVER_SET_HEADERS = {b"date", b"server"}
WEBSOCKET_HEADERS = {
    b"sec-websocket-key",
    b"sec-websocket-version",
    b"sec-websocket-extensions",
    b"sec-websocket-protocol",
    b"sec-websocket-accept",
}
MAX_WEBSOCKET_MESSAGE = 16 * 1024 * 1024

Headers = list[tuple[bytes, bytes]]


def forwarded_headers(scope: Scope, drop: Iterable[bytes], extra: Headers) -> Headers:
    """The client's headers minus hop-by-hop ones and `drop`, plus `extra`."""
    dropped = HOP_BY_HOP | set(drop)
    return [(k.lower(), v) for k, v in scope.get("headers", ()) if k.lower() not in dropped] + extra


async def send_error(send: Send, error: WorkspaceError) -> None:
    body = json.dumps(error.envelope()).encode()
    await send(
        {
            "type": "http.response.start",
            "status": http_status(error),
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def relay_http(
    scope: Scope, receive: Receive, send: Send, tunnel: PortTunnel, target: str, headers: Headers, head_timeout: float
) -> None:
    """Send the request down the tunnel and stream the answer back to the client."""
    upstream = h11.Connection(h11.CLIENT)
    names = {name for name, _ in headers}
    if b"content-length" not in names and any(k.lower() == b"transfer-encoding" for k, _ in scope["headers"]):
        headers = [*headers, (b"transfer-encoding", b"chunked")]
    headers = [*headers, (b"connection", b"close")]
    method = scope["method"].encode()
    await tunnel.write(upstream.send(h11.Request(method=method, target=target.encode(), headers=headers)))

    async def request_body() -> None:
        more = True
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if not more:
                continue
            try:
                body = message.get("body", b"")
                if body:
                    await tunnel.write(upstream.send(h11.Data(data=body)))
                if not message.get("more_body", False):
                    await tunnel.write(upstream.send(h11.EndOfMessage()))
                    more = False  # keep listening: a client that goes away must end the relay
            except TunnelClosed:
                more = False  # the server stopped reading (it may answer early): its answer still comes

    async def response() -> None:
        head = await asyncio.wait_for(_response_head(upstream, tunnel), head_timeout)
        if head is None:
            raise WorkspaceError(
                f"the server on port {tunnel.port} closed the connection without answering", code="PORT_UNREACHABLE"
            )
        await send(
            {
                "type": "http.response.start",
                "status": head.status_code,
                "headers": [(k, v) for k, v in head.headers if k not in HOP_BY_HOP | SERVER_SET_HEADERS],
            }
        )
        while True:
            event = await _next_event(upstream, tunnel)
            if isinstance(event, h11.Data):
                await send({"type": "http.response.body", "body": bytes(event.data), "more_body": True})
            else:  # EndOfMessage, or the server closed the connection mid-body
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return

    # request_body() returns only when the client goes away (even while the server in the
    # sandbox is silent): that ends the relay and gives its tunnel back at once.
    await until_first_ends(request_body(), response())


async def until_first_ends(*coroutines: Coroutine[Any, Any, None]) -> None:
    """Run the coroutines side by side until one ends, then cancel the others. The one that
    ended first re-raises its exception, if it had one."""
    tasks = [asyncio.create_task(coroutine) for coroutine in coroutines]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        next(iter(done)).result()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


async def relay_http_guarded(
    scope: Scope,
    receive: Receive,
    send: Send,
    tunnel: PortTunnel,
    target: str,
    headers: Headers,
    head_timeout: float,
    sandbox_id: str,
) -> None:
    """relay_http with its failures answered as the API's error envelope (before the head)."""
    started = False

    async def tracking_send(message: Message) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await relay_http(scope, receive, tracking_send, tunnel, target, headers, head_timeout)
    except asyncio.TimeoutError:
        if not started:
            await send_error(send, UpstreamTimeout(sandbox_id, tunnel.port, head_timeout))
    except (TunnelClosed, h11.ProtocolError) as exc:
        if not started:
            message = f"the server on port {tunnel.port} broke the HTTP exchange: {exc or type(exc).__name__}"
            await send_error(send, WorkspaceError(message, code="PORT_UNREACHABLE", port=tunnel.port))
    except WorkspaceError as exc:
        if not started:
            await send_error(send, exc)


async def _next_event(upstream: h11.Connection, tunnel: PortTunnel) -> object:
    while True:
        event = upstream.next_event()
        if event is h11.NEED_DATA:
            upstream.receive_data(await tunnel.read())  # b"" = the server closed: h11 decides what that means
            continue
        return event


async def _response_head(upstream: h11.Connection, tunnel: PortTunnel) -> h11.Response | None:
    while True:
        event = await _next_event(upstream, tunnel)
        if isinstance(event, h11.Response):
            return event
        if isinstance(event, h11.ConnectionClosed):
            return None
        # h11.InformationalResponse (100 Continue, 103 Early Hints): not forwarded


async def relay_websocket(
    scope: Scope, receive: Receive, send: Send, tunnel: PortTunnel, target: str, headers: Headers
) -> None:
    """Open the WebSocket on the server in the sandbox, then accept the client's and relay messages."""
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    subprotocols = [
        p.strip()
        for k, v in scope.get("headers", ())
        if k.lower() == b"sec-websocket-protocol"
        for p in v.decode("latin-1").split(",")
        if p.strip()
    ]
    protocol = ClientProtocol(
        parse_uri(f"ws://127.0.0.1:{tunnel.port}{target}"),
        subprotocols=subprotocols or None,
        max_size=MAX_WEBSOCKET_MESSAGE,
    )
    request = protocol.connect()
    for name, value in headers:
        if name not in WEBSOCKET_HEADERS and name != b"host":
            request.headers[name.decode("latin-1")] = value.decode("latin-1")
    host = dict(scope.get("headers", ())).get(b"host")
    if host:
        del request.headers["Host"]
        request.headers["Host"] = host.decode("latin-1")
    protocol.send_request(request)
    await _flush(protocol, tunnel)
    response, early_frames = await _handshake(protocol, tunnel)
    if response is None or protocol.handshake_exc is not None:
        status = response.status_code if response is not None else 0
        await send({"type": "websocket.close", "code": 1014, "reason": f"upstream refused the WebSocket ({status})"})
        return
    await send({"type": "websocket.accept", "subprotocol": protocol.subprotocol})

    async def client_to_upstream() -> None:
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                protocol.send_close(message.get("code", 1000) if message.get("code", 1000) != 1006 else 1000)
                await _flush(protocol, tunnel)
                return
            if message.get("text") is not None:
                protocol.send_text(message["text"].encode())
            elif message.get("bytes") is not None:
                protocol.send_binary(message["bytes"])
            await _flush(protocol, tunnel)

    async def upstream_to_client() -> None:
        fragments: list[bytes] = []
        opcode = Opcode.TEXT
        events = early_frames
        data = b"-"
        while True:
            for frame in events:
                assert isinstance(frame, Frame)
                if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                    opcode, fragments = frame.opcode, [bytes(frame.data)]
                elif frame.opcode == Opcode.CONT:
                    fragments.append(bytes(frame.data))
                elif frame.opcode == Opcode.CLOSE:
                    close = Close.parse(bytes(frame.data)) if frame.data else None
                    await send({"type": "websocket.close", "code": close.code if close else 1000})
                    await _flush(protocol, tunnel)
                    return
                else:
                    continue  # PING (the protocol queued its PONG) / PONG
                if frame.fin:
                    payload = b"".join(fragments)
                    if opcode == Opcode.TEXT:
                        await send({"type": "websocket.send", "text": payload.decode()})
                    else:
                        await send({"type": "websocket.send", "bytes": payload})
            await _flush(protocol, tunnel)
            if not data:
                await send({"type": "websocket.close", "code": 1011})
                return
            data = await tunnel.read()
            if data:
                protocol.receive_data(data)
            else:
                protocol.receive_eof()
            events = protocol.events_received()

    with contextlib.suppress(TunnelClosed):  # either side may end the session
        await until_first_ends(client_to_upstream(), upstream_to_client())


async def _flush(protocol: ClientProtocol, tunnel: PortTunnel) -> None:
    data = b"".join(protocol.data_to_send())
    if data:
        await tunnel.write(data)


async def _handshake(protocol: ClientProtocol, tunnel: PortTunnel) -> tuple[WsResponse | None, list[Any]]:
    """The server's handshake response, and the frames that arrived with it."""
    while True:
        data = await tunnel.read()
        if not data:
            protocol.receive_eof()
            return None, []
        protocol.receive_data(data)
        events = protocol.events_received()
        for index, event in enumerate(events):
            if isinstance(event, WsResponse):
                return event, list(events[index + 1 :])
        if protocol.handshake_exc is not None:
            return None, []
