"""/ui: the console's pages and files, and sign-in (the API key, once, for a session cookie).

None of these routes is part of the REST API (they are left out of the OpenAPI document),
and all of them are reachable without a key: they hold no data. The console reads and
changes sandboxes through /api/v1 like any client, with the session cookie.
"""

from __future__ import annotations

import asyncio
import hmac
import re
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from workspace_server.api.middleware import same_origin
from workspace_server.api.sessions import (
    COOKIE_NAME,
    SessionStore,
    clear_cookie_header,
    cookie_value,
    set_cookie_header,
)
from workspace_server.config import Settings
from workspace_server.console.assets import Assets

router = APIRouter(include_in_schema=False)
assets = Assets()

# The pages run only their own scripts and talk only to this server; nothing may frame them.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
        # xterm.js sizes its rows with inline styles.
        "style-src 'self' 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    # Not "no-referrer": with it, browsers send `Origin: null` on form posts, which the
    # same-origin check must then refuse.
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
}
# A wrong key costs the guesser this long (sign-in attempts are not otherwise limited).
FAILED_SIGN_IN_DELAY = 0.5
SANDBOX_ACTION = re.compile(r"^/api/v1/sandboxes/\{sandbox_id\}/([a-z_]+)$")
# Lifecycle actions the console has buttons for (they need no input), when the server has them.
BUTTON_ACTIONS = {"pause", "resume", "stop", "start", "fork"}


def settings_of(request: Request) -> Settings:
    found: Settings = request.app.state.settings
    return found


def sessions_of(request: Request) -> SessionStore:
    found: SessionStore = request.app.state.sessions
    return found


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def refused_cross_site() -> JSONResponse:
    return JSONResponse(
        {"code": "PERMISSION_DENIED", "message": "cross-site request refused", "details": {}}, status_code=403
    )


@router.get("/ui")
async def console_root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui/session")
async def session_state(request: Request) -> dict[str, Any]:
    """What the page needs to know before anything else: is a sign-in needed, is it done."""
    settings = settings_of(request)
    token = cookie_value(request.headers.get("cookie"))
    signed_in = settings.api_key is None or (token is not None and sessions_of(request).valid(token))
    return {"auth_required": settings.api_key is not None, "signed_in": signed_in}


@router.post("/ui/session")
async def sign_in(request: Request) -> Response:
    """The sign-in form posts the key here (a plain form: no script ever holds it)."""
    if request.headers.get("origin") is not None and not same_origin(request.scope):
        return refused_cross_site()  # login CSRF: a foreign page signing the browser in
    settings = settings_of(request)
    if settings.api_key is None:
        return RedirectResponse("/ui/", status_code=303)
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=4)
    presented = (form.get("api_key") or [""])[0]
    if not hmac.compare_digest(presented.encode(), settings.api_key.encode()):
        await asyncio.sleep(FAILED_SIGN_IN_DELAY)
        return RedirectResponse("/ui/?signin=failed", status_code=303)
    token = sessions_of(request).create()
    response = RedirectResponse("/ui/", status_code=303)
    response.headers["set-cookie"] = set_cookie_header(
        token, int(sessions_of(request).lifetime_seconds), secure=is_https(request)
    )
    response.headers["cache-control"] = "no-store"
    return response


@router.post("/ui/signout")
async def sign_out(request: Request) -> Response:
    if not same_origin(request.scope):
        return refused_cross_site()
    token = cookie_value(request.headers.get("cookie"))
    if token is not None:
        sessions_of(request).revoke(token)
    response = RedirectResponse("/ui/", status_code=303)
    response.headers["set-cookie"] = clear_cookie_header(secure=is_https(request))
    return response


@router.get("/ui/features")
async def features(request: Request) -> dict[str, Any]:
    """Which optional API routes this server has, so the console shows only working buttons
    (sandbox lifecycle actions, template routes)."""
    actions: set[str] = set()
    template_routes: set[str] = set()
    # The API's own document (FastAPI builds it once and caches it) lists its routes.
    for path, operations in request.app.openapi().get("paths", {}).items():
        match = SANDBOX_ACTION.match(path)
        if match and "post" in operations and match.group(1) in BUTTON_ACTIONS:
            actions.add(match.group(1))
        if path.startswith("/api/v1/templates"):
            template_routes.update(f"{method.upper()} {path}" for method in operations)
    return {"sandbox_actions": sorted(actions), "template_routes": sorted(template_routes)}


@router.get("/ui/{name:path}")
async def console_file(name: str, request: Request) -> Response:
    asset = assets.get(name or "index.html")
    if asset is None:
        missing = name.startswith("vendor/") and not assets.vendor_installed()
        message = (
            "the console's front-end packages are not installed: run scripts/setup.sh (npm ci in "
            "server/src/workspace_server/console)"
            if missing
            else f"no console file {name!r}"
        )
        return JSONResponse({"code": "NOT_FOUND", "message": message, "details": {}}, status_code=404)
    headers = {"ETag": asset.etag, "Cache-Control": "no-cache", "Vary": "Accept-Encoding"}
    if asset.content_type.startswith("text/html"):
        headers.update(PAGE_HEADERS)
        headers["Cache-Control"] = "no-store"
    if request.headers.get("if-none-match") == asset.etag:
        return Response(status_code=304, headers=headers)
    if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
        headers["Content-Encoding"] = "gzip"
        return Response(asset.gzipped, media_type=asset.content_type, headers=headers)
    return Response(asset.body, media_type=asset.content_type, headers=headers)


__all__ = ["COOKIE_NAME", "router"]
