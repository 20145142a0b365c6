"""Reaching servers inside sandboxes over HTTP and WebSocket, two ways:

* preview hosts, `{port}-{sandbox_id}.{preview domain}` (ASGI middleware outside the API's
  auth: they never take the API key; a private port needs a signed token, given once in the
  URL and then kept in a cookie of that host alone);
* `/api/v1/sandboxes/{id}/ports/{port}/...` under the API, with the API key.

Either way the request goes through PortService's tunnel, and the headers that carry the
server's own credentials (the API key, our cookie, our token) are stripped first.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

from workspace_server.api.deps import Services
from workspace_server.api.errors import http_status
from workspace_server.api.middleware import presented_key, reject_websocket
from workspace_server.api.port_relay import forwarded_headers, relay_http_guarded, relay_websocket, send_error
from workspace_server.api.sessions import COOKIE_NAME as SESSION_COOKIE
from workspace_server.domain.errors import WorkspaceError
from workspace_server.domain.previews import COOKIE_NAME, TOKEN_PARAM, PreviewAddress, parse_preview_host

PORT_PATH = re.compile(r"^/api/v1/sandboxes/(?P<sandbox>[^/]+)/ports/(?P<port>[0-9]{1,5})(?P<rest>/.*)?$")


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return str(value.decode("latin-1"))
    return None


def _without_param(query: str, name: str) -> tuple[str, str | None]:
    """(query without `name`, the value of `name`), keeping the order of the rest."""
    pairs = parse_qsl(query, keep_blank_values=True)
    value = next((v for k, v in pairs if k == name), None)
    if value is None:
        return query, None
    return urlencode([(k, v) for k, v in pairs if k != name]), value


def _credential_headers(scope: Scope, api_key: str | None) -> set[bytes]:
    """Headers carrying the server's credentials: never sent into a sandbox."""
    drop = {b"x-api-key", b"cookie"}  # cookie: re-added below without ours
    key = presented_key(scope)
    if key is not None and api_key is not None and hmac.compare_digest(key.encode(), api_key.encode()):
        drop.add(b"authorization")
    return drop


def _cookies_without_ours(scope: Scope) -> list[tuple[bytes, bytes]]:
    """The client's cookies minus the preview token's and the console session's."""
    raw = _header(scope, b"cookie")
    if not raw:
        return []
    ours = {COOKIE_NAME, SESSION_COOKIE}
    kept = [part.strip() for part in raw.split(";") if part.strip().split("=", 1)[0].strip() not in ours]
    return [(b"cookie", "; ".join(kept).encode("latin-1"))] if kept else []


def _preview_cookie(scope: Scope) -> str | None:
    raw = _header(scope, b"cookie")
    if not raw:
        return None
    try:
        cookie = SimpleCookie(raw)
    except CookieError:
        return None
    morsel = cookie.get(COOKIE_NAME)
    return morsel.value if morsel is not None else None


async def _answer_error(scope: Scope, receive: Receive, send: Send, error: WorkspaceError) -> None:
    if scope["type"] == "websocket":
        await reject_websocket(receive, send, 4000 + http_status(error), error.code, error.message)
    else:
        await send_error(send, error)


async def proxy(
    scope: Scope,
    receive: Receive,
    send: Send,
    services: Services,
    address: PreviewAddress,
    target: str,
    extra: list[tuple[bytes, bytes]],
) -> None:
    """Relay one request or WebSocket to the address, answering failures as the API does."""
    headers = forwarded_headers(scope, _credential_headers(scope, services.settings.api_key), extra)
    headers += _cookies_without_ours(scope)
    try:
        async with services.ports.tunnel(address.sandbox_id, address.port) as tunnel:
            if scope["type"] == "websocket":
                await relay_websocket(scope, receive, send, tunnel, target, headers)
            else:
                head_timeout = services.settings.preview_response_timeout
                await relay_http_guarded(
                    scope, receive, send, tunnel, target, headers, head_timeout, address.sandbox_id
                )
    except WorkspaceError as exc:
        await _answer_error(scope, receive, send, exc)


def _forwarding(scope: Scope, host: str, scheme: str) -> list[tuple[bytes, bytes]]:
    client = scope.get("client")
    extra = [(b"x-forwarded-host", host.encode("latin-1")), (b"x-forwarded-proto", scheme.encode())]
    if client:
        extra.append((b"x-forwarded-for", str(client[0]).encode()))
    return extra


class PortPathProxy:
    """`/api/v1/sandboxes/{id}/ports/{port}/...` (inside the API's auth middleware)."""

    def __init__(self, app: ASGIApp, services: Callable[[], Services]) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = PORT_PATH.match(scope.get("path", "")) if scope["type"] in ("http", "websocket") else None
        if match is None:
            await self.app(scope, receive, send)
            return
        address = PreviewAddress(match["sandbox"], int(match["port"]))
        query = scope.get("query_string", b"").decode("latin-1")
        target = (match["rest"] or "/") + (f"?{query}" if query else "")
        extra = _forwarding(scope, _header(scope, b"host") or "", scope.get("scheme", "http"))
        await proxy(scope, receive, send, self.services(), address, target, extra)


class PreviewHosts:
    """Preview hosts (outermost middleware): everything else goes on to the API."""

    def __init__(self, app: ASGIApp, domain: str, services: Callable[[], Services]) -> None:
        self.app = app
        self.domain = domain
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        host = _header(scope, b"host") if scope["type"] in ("http", "websocket") else None
        address = parse_preview_host(host, self.domain) if host else None
        if address is None or host is None:
            await self.app(scope, receive, send)
            return
        services = self.services()
        query, token = _without_param(scope.get("query_string", b"").decode("latin-1"), TOKEN_PARAM)
        path = scope.get("raw_path") or scope.get("path", "/").encode()
        target = path.decode("latin-1") + (f"?{query}" if query else "")
        secure = services.ports.site.scheme == "https"
        try:
            services.sandboxes.record(address.sandbox_id)  # SANDBOX_NOT_FOUND before anything else
            if token is not None:
                problem = services.ports.tokens.check(token, address)
                if problem is not None:
                    raise WorkspaceError(problem, code="UNAUTHORIZED")
                if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
                    # Keep the token in a cookie of this host only, and take it out of the
                    # address bar (and of every Referer the page would send).
                    await _redirect_with_cookie(send, target, token, secure)
                    return
            elif not services.ports.is_public(address):
                cookie = _preview_cookie(scope)
                problem = services.ports.tokens.check(cookie, address) if cookie else "this preview URL needs its token"
                if problem is not None:
                    raise WorkspaceError(
                        f"{problem}: ask the API for a preview URL "
                        f"(POST /api/v1/sandboxes/{address.sandbox_id}/preview-urls) or make the port public",
                        code="UNAUTHORIZED",
                    )
        except WorkspaceError as exc:
            await _answer_error(scope, receive, send, exc)
            return
        await proxy(
            scope, receive, send, services, address, target, _forwarding(scope, host, "https" if secure else "http")
        )


async def _redirect_with_cookie(send: Send, target: str, token: str, secure: bool) -> None:
    cookie = f"{COOKIE_NAME}={token}; Path=/; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
    await send(
        {
            "type": "http.response.start",
            "status": 303,
            "headers": [
                (b"location", target.encode("latin-1")),
                (b"set-cookie", cookie.encode("latin-1")),
                (b"cache-control", b"no-store"),
                (b"content-length", b"0"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": b""})
