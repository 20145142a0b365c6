# Generated from _async/_api_client.py by scripts/unasync.py. Do not edit: edit that file.
"""The one place that performs HTTP and WebSocket I/O for a client.

``APIClient`` owns the connection pool, turns ``ApiRequest`` descriptions into httpx
requests with the configured headers and timeouts, and turns every failure into an SDK
exception: error envelopes through the error table, transport failures into
``WorkspaceConnectionError``. Resource modules never touch httpx exceptions themselves.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import httpx
import websockets.exceptions
from websockets.sync.client import ClientConnection, connect

from .._config import ClientConfig
from .._exceptions import error_from_response, error_from_transport
from .._protocol import ApiRequest, WebSocketRequest
from .._protocol._common import invalid_response

if TYPE_CHECKING:
    from .pty import PtyHandle

logger = logging.getLogger("workspace_sdk")

# Many concurrent streams each hold a connection for their whole life, so the pool is sized
# for fan-out (as Stainless SDKs do) rather than httpx's default of 100.
DEFAULT_LIMITS = httpx.Limits(max_connections=1000, max_keepalive_connections=100)


class APIClient:
    """HTTP/WebSocket transport shared by all resources of one client."""

    def __init__(self, config: ClientConfig, http_client: httpx.Client | None) -> None:
        self.config = config
        # A caller-supplied httpx client (custom transport, proxies, certificates) stays the
        # caller's to close; one we create is ours.
        self._owns_http_client = http_client is None
        self._http = http_client or httpx.Client(limits=DEFAULT_LIMITS, timeout=config.request_timeout())
        self._open_ptys: set[PtyHandle] = set()
        self._open_ptys_lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _build(
        self,
        api_request: ApiRequest,
        *,
        content: bytes | Iterator[bytes] | None,
        headers: Mapping[str, str] | None,
        timeout: httpx.Timeout | None,
    ) -> httpx.Request:
        if self._closed:
            raise RuntimeError("this Workspace client is closed")
        return self._http.build_request(
            api_request.method,
            self.config.url(api_request.path),
            params=dict(api_request.params) or None,
            json=api_request.json,
            content=content,
            headers={**self.config.headers, **(headers or {})},
            timeout=timeout if timeout is not None else self.config.request_timeout(),
        )

    def request(
        self,
        api_request: ApiRequest,
        *,
        content: bytes | Iterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """Send the request, read the whole response, raise on an error status."""
        request = self._build(api_request, content=content, headers=headers, timeout=timeout)
        try:
            response = self._http.send(request)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, str(request.url)) from exc
        logger.debug("%s %s -> %d", request.method, request.url, response.status_code)
        if response.is_error:
            raise error_from_response(
                response.status_code,
                response.content,
                reason=response.reason_phrase,
                context=api_request.error_context,
            )
        return response

    def request_json(
        self,
        api_request: ApiRequest,
        *,
        content: bytes | Iterator[bytes] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
    ) -> Any:
        """``request`` and decode the JSON body."""
        response = self.request(api_request, content=content, headers=headers, timeout=timeout)
        try:
            return json.loads(response.content)
        except ValueError as exc:
            raise invalid_response(f"{api_request.method} {api_request.path} returned a non-JSON body") from exc

    def open_stream(self, api_request: ApiRequest, *, timeout: httpx.Timeout) -> httpx.Response:
        """Send the request and return once the response headers arrive; the body is left
        unread. The caller must ``close()`` the response."""
        request = self._build(api_request, content=None, headers=None, timeout=timeout)
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise error_from_transport(exc, str(request.url)) from exc
        logger.debug("%s %s -> %d (stream)", request.method, request.url, response.status_code)
        if response.is_error:
            try:
                body = response.read()
            except httpx.TransportError as exc:
                raise error_from_transport(exc, str(request.url)) from exc
            finally:
                response.close()
            raise error_from_response(
                response.status_code,
                body,
                reason=response.reason_phrase,
                context=api_request.error_context,
            )
        return response

    def open_websocket(self, ws_request: WebSocketRequest) -> ClientConnection:
        """Complete the WebSocket handshake; the caller owns (and closes) the connection."""
        if self._closed:
            raise RuntimeError("this Workspace client is closed")
        url = self.config.websocket_url(ws_request.path, ws_request.params)
        try:
            # Entering connect() as a context manager (rather than awaiting/calling it) is the
            # non-deprecated way to get a long-lived connection across websockets releases.
            return connect(
                url, additional_headers=self.config.headers, open_timeout=self.config.timeout
            ).__enter__()
        except websockets.exceptions.InvalidStatus as exc:
            raise error_from_response(
                exc.response.status_code,
                bytes(exc.response.body or b""),
                reason=exc.response.reason_phrase,
                context=ws_request.error_context,
            ) from exc
        except (OSError, websockets.exceptions.WebSocketException) as exc:
            # OSError covers refused connections and TimeoutError (handshake timeout).
            raise error_from_transport(exc, url) from exc

    def register_pty(self, handle: PtyHandle) -> None:
        with self._open_ptys_lock:
            self._open_ptys.add(handle)

    def unregister_pty(self, handle: PtyHandle) -> None:
        with self._open_ptys_lock:
            self._open_ptys.discard(handle)

    def close(self) -> None:
        """Close open PTY sessions, then the connection pool (if we created it)."""
        if self._closed:
            return
        self._closed = True
        with self._open_ptys_lock:
            handles = list(self._open_ptys)
        try:
            for handle in handles:
                handle.close()
        finally:
            if self._owns_http_client:
                self._http.close()
