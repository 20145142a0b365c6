"""ASGI middleware: API-key or console-session auth, cross-site refusal, request-size limits,
request ids for the logs."""

from __future__ import annotations

import hmac
import json
import re
import secrets
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from workspace_server.api.sessions import SessionStore, cookie_value
from workspace_server.logs import request_id_var, sandbox_id_var

OPEN_PATHS = {"/healthz"}
# The console's pages, scripts and sign-in form: public files, no data. Its API calls go to
# /api/v1 with the session cookie.
CONSOLE_PREFIX = "/ui"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
MAX_HEADER_BYTES = 32 * 1024
UPLOAD_PATH = re.compile(r"^/api/v1/sandboxes/[^/]+/files$")
STDIN_PATH = re.compile(r"^/api/v1/sandboxes/[^/]+/processes/[^/]+/stdin$")  # streamed like an upload
IMPORT_PATH = "/api/v1/templates/import"
BUILD_PATH = "/api/v1/templates/build"  # the build context, streamed like an import
PORT_PROXY_PATH = re.compile(r"^/api/v1/sandboxes/[^/]+/ports/[0-9]+(/.*)?$")  # any body, streamed to the sandbox
SANDBOX_PATH = re.compile(r"^/api/v1/sandboxes/([^/]+)")
# E2B's envd data plane authenticates each sandbox's calls with its own X-Access-Token (checked
# by the e2b routes), not the API key; its control plane (/e2b/...) takes X-API-KEY like the API.
E2B_ENVD_PREFIX = "/e2b/envd/"
E2B_UPLOAD_PATH = "/e2b/envd/files"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def presented_key(scope: Scope) -> str | None:
    authorization = _header(scope, b"authorization")
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip()
    return _header(scope, b"x-api-key")


async def _reject_http(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"code": code, "message": message, "details": {}}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def reject_websocket(receive: Receive, send: Send, close_code: int, code: str, message: str) -> None:
    """Errors on a WebSocket are an error frame then a close, so browsers can read them."""
    first = await receive()
    if first["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps({"type": "error", "code": code, "message": message})})
    await send({"type": "websocket.close", "code": close_code})


LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def hostname_of(value: str) -> str:
    """'Host' or 'Origin' value -> bare lower-case host name ('[::1]:80' -> '::1')."""
    value = value.strip().lower()
    if "://" in value:
        value = value.split("://", 1)[1]
    value = value.split("/", 1)[0]
    if value.startswith("["):
        return value[1:].split("]", 1)[0]
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def is_open_path(path: str) -> bool:
    return path in OPEN_PATHS or path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


def same_origin(scope: Scope) -> bool:
    """Whether the request says it comes from a page of this very server (scheme, host and
    port): browsers send `Origin` on every WebSocket handshake and on POST, PUT and DELETE."""
    origin, host = _header(scope, b"origin"), _header(scope, b"host")
    if origin is None or host is None:
        return False
    scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
    return origin.strip().lower() == f"{scheme}://{host.strip().lower()}"


class GuardMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        api_key: str | None,
        max_json_body: int,
        max_upload: int,
        bind_host: str = "127.0.0.1",
        sessions: SessionStore | None = None,
    ) -> None:
        self.app = app
        self.api_key = api_key
        self.sessions = sessions
        self.allowed_hosts = LOOPBACK_NAMES | {bind_host.lower().strip("[]")}
        self.max_json_body = max_json_body
        self.max_upload = max_upload

    def _foreign_caller(self, scope: Scope) -> str | None:
        host = _header(scope, b"host")
        if host is not None and hostname_of(host) not in self.allowed_hosts:
            return f"Host {host!r} is not this server; without an API key only local names are served"
        origin = _header(scope, b"origin")
        if origin is not None and origin != "null" and hostname_of(origin) not in self.allowed_hosts:
            return f"cross-site request from {origin!r} refused; without an API key only local pages are served"
        if origin == "null":
            return "requests from opaque origins are refused without an API key"
        return None

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        """Why a request to a keyed server is refused, or None. The key may come in a header
        or, for the console, as a session cookie; a cookie is sent by the browser on its own,
        so a cookie-authenticated WebSocket or changing request must also come from one of
        this server's own pages (SameSite=Strict alone would let another port of the same
        host, a different origin but the same site, use it)."""
        assert self.api_key is not None
        key = presented_key(scope)
        if key is not None:
            if hmac.compare_digest(key.encode(), self.api_key.encode()):
                return None
            return 401, "UNAUTHORIZED", "invalid API key"
        token = cookie_value(_header(scope, b"cookie"))
        if token is None or self.sessions is None or not self.sessions.valid(token):
            problem = "session expired or signed out: sign in again" if token else "missing or invalid API key"
            return 401, "UNAUTHORIZED", f"{problem} (Authorization: Bearer KEY or X-API-Key: KEY)"
        changing = scope["type"] == "websocket" or scope.get("method") not in SAFE_METHODS
        if changing and not same_origin(scope):
            problem = "cross-site request refused: a console session serves this server's own pages"
            return 403, "PERMISSION_DENIED", problem
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        if sum(len(k) + len(v) for k, v in scope.get("headers", ())) > MAX_HEADER_BYTES:
            if scope["type"] == "websocket":
                await reject_websocket(receive, send, 4400, "HEADERS_TOO_LARGE", "request headers too large")
            else:
                await _reject_http(send, 431, "HEADERS_TOO_LARGE", f"request headers exceed {MAX_HEADER_BYTES} bytes")
            return
        request_id = _header(scope, b"x-request-id") or secrets.token_hex(8)
        request_id_var.set(request_id[:64])
        match = SANDBOX_PATH.match(path)
        sandbox_id_var.set(match.group(1) if match else "-")

        if self.api_key is None and path not in OPEN_PATHS:
            # Without a key, being on this machine is the credential. A web page must not
            # borrow it: refuse foreign Host names (DNS rebinding) and foreign Origins
            # (cross-site requests and WebSocket hijacking).
            problem = self._foreign_caller(scope)
            if problem is not None:
                if scope["type"] == "websocket":
                    await reject_websocket(receive, send, 4403, "PERMISSION_DENIED", problem)
                else:
                    await _reject_http(send, 403, "PERMISSION_DENIED", problem)
                return
        if self.api_key is not None and not is_open_path(path) and not path.startswith(E2B_ENVD_PREFIX):
            refusal = self._refusal(scope)
            if refusal is not None:
                status, code, message = refusal
                if scope["type"] == "websocket":
                    await reject_websocket(receive, send, 4000 + status, code, message)
                else:
                    await _reject_http(send, status, code, message)
                return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return

        streamed = (
            (UPLOAD_PATH.match(path) and scope.get("method") == "PUT")
            or (STDIN_PATH.match(path) and scope.get("method") == "POST")
            or (path in (IMPORT_PATH, BUILD_PATH) and scope.get("method") == "POST")
            or PORT_PROXY_PATH.match(path)
            or (path == E2B_UPLOAD_PATH and scope.get("method") == "POST")
        )
        limit = self.max_upload if streamed else self.max_json_body
        declared = _header(scope, b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _reject_http(send, 400, "INVALID_REQUEST", "malformed Content-Length")
                return
            if int(declared) > limit:
                await _reject_http(send, 413, "PAYLOAD_TOO_LARGE", f"request body exceeds {limit} bytes")
                return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise HTTPException(413, f"request body exceeds {limit} bytes")
            return message

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[Any] = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode("latin-1", "replace")))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, limited_receive, send_with_id)
