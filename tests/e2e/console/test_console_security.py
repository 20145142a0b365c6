"""The console's sign-in and session against a keyed live server: what is refused, where
the key is not, when the session ends, and that other origins cannot use the cookie."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

import httpx
import pytest
from websockets.sync.client import connect

from tests.support.browser import chromium, require_chromium, screenshot
from tests.support.live_server import LiveServer, data_root, free_port, start_server, stop_server

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext

KEY = "console-security-key-9c2e"


@pytest.fixture(scope="module")
def server() -> Iterator[LiveServer]:
    started = start_server(data_root() / "data", api_key=KEY, extra=["--pool-size", "0", "--session-ttl", "600"])
    try:
        yield started
    finally:
        with httpx.Client(base_url=started.url + "/api/v1", headers={"X-API-Key": KEY}, timeout=60) as api:
            for item in api.get("/sandboxes").json()["sandboxes"]:
                api.delete(f"/sandboxes/{item['id']}", params={"force": "true"})
        stop_server(started)


def sign_in(server: LiveServer, key: str = KEY) -> httpx.Response:
    return httpx.post(
        server.url + "/ui/session",
        data={"api_key": key},
        headers={"Origin": server.url},
        follow_redirects=False,
        timeout=30,
    )


def session_cookie(response: httpx.Response) -> str:
    header = response.headers["set-cookie"]
    return header.split(";", 1)[0].split("=", 1)[1]


def test_wrong_key_is_refused(server: LiveServer) -> None:
    refused = sign_in(server, "wrong-key")
    assert refused.status_code == 303 and refused.headers["location"] == "/ui/?signin=failed"
    assert "set-cookie" not in refused.headers
    assert httpx.get(server.url + "/api/v1/sandboxes").status_code == 401
    made_up = httpx.get(server.url + "/api/v1/sandboxes", cookies={"workspace_session": "made-up"})
    assert made_up.status_code == 401 and made_up.json()["code"] == "UNAUTHORIZED"


def test_sign_in_sets_an_httponly_strict_expiring_cookie(server: LiveServer) -> None:
    response = sign_in(server)
    assert response.status_code == 303 and response.headers["location"] == "/ui/"
    attributes = [part.strip() for part in response.headers["set-cookie"].split(";")]
    assert attributes[0].startswith("workspace_session=") and len(attributes[0]) > 40
    assert {"HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=600"} <= set(attributes)
    assert KEY not in response.headers["set-cookie"]
    cookie = session_cookie(response)
    with httpx.Client(base_url=server.url, cookies={"workspace_session": cookie}) as browser_like:
        assert browser_like.get("/api/v1/sandboxes").status_code == 200
        assert browser_like.get("/ui/session").json() == {"auth_required": True, "signed_in": True}
        # Signing out ends the session on the server, not just in the browser.
        out = browser_like.post("/ui/signout", headers={"Origin": server.url})
        assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
        assert browser_like.get("/api/v1/sandboxes").status_code == 401


def test_changing_requests_need_this_servers_origin(server: LiveServer) -> None:
    cookie = session_cookie(sign_in(server))
    with httpx.Client(base_url=server.url + "/api/v1", cookies={"workspace_session": cookie}, timeout=60) as client:
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {}, {"Origin": "http://127.0.0.1:1"}):
            refused = client.post("/sandboxes", json={}, headers=headers)
            assert refused.status_code == 403 and refused.json()["code"] == "PERMISSION_DENIED", headers
        # A cross-site HTML form (urlencoded, text/plain) is refused the same way.
        form = client.post(
            "/sandboxes", content=b"a=b", headers={"Origin": "http://evil.example", "Content-Type": "text/plain"}
        )
        assert form.status_code == 403
        assert client.get("/sandboxes").json()["sandboxes"] == []
        created = client.post("/sandboxes", json={}, headers={"Origin": server.url})
        assert created.status_code == 201
        client.delete(f"/sandboxes/{created.json()['id']}", params={"force": "true"}, headers={"Origin": server.url})
    # Login CSRF: another site cannot sign this browser in to its own session.
    foreign = httpx.post(server.url + "/ui/session", data={"api_key": KEY}, headers={"Origin": "http://evil.example"})
    assert foreign.status_code == 403 and "set-cookie" not in foreign.headers


def test_session_cookie_expires() -> None:
    short = start_server(data_root() / "data", api_key=KEY, extra=["--pool-size", "0", "--session-ttl", "2"])
    try:
        response = sign_in(short)
        assert "Max-Age=2" in response.headers["set-cookie"]
        cookies = {"workspace_session": session_cookie(response)}
        assert httpx.get(short.url + "/api/v1/sandboxes", cookies=cookies).status_code == 200
        time.sleep(2.5)
        # The server enforces the expiry too (a client could keep sending the cookie).
        expired = httpx.get(short.url + "/api/v1/sandboxes", cookies=cookies)
        assert expired.status_code == 401 and "session expired" in expired.json()["message"]
        assert httpx.get(short.url + "/ui/session", cookies=cookies).json()["signed_in"] is False
    finally:
        stop_server(short)


def pty_url(server: LiveServer, sandbox_id: str) -> str:
    return server.url.replace("http://", "ws://") + f"/api/v1/sandboxes/{sandbox_id}/pty"


def test_console_websocket_refuses_a_foreign_origin(server: LiveServer) -> None:
    cookie = session_cookie(sign_in(server))
    with httpx.Client(base_url=server.url + "/api/v1", headers={"X-API-Key": KEY}, timeout=60) as api:
        sandbox_id = api.post("/sandboxes", json={}).json()["id"]
        try:
            for origin in ("http://evil.example", server.url.replace("127.0.0.1", "localhost"), None):
                headers = {"Cookie": f"workspace_session={cookie}"}
                if origin:
                    headers["Origin"] = origin
                with connect(pty_url(server, sandbox_id), additional_headers=headers, origin=None) as ws:
                    frame = json.loads(ws.recv(timeout=10))
                    assert frame["type"] == "error" and frame["code"] == "PERMISSION_DENIED", origin
            own = {"Cookie": f"workspace_session={cookie}", "Origin": server.url}
            with connect(pty_url(server, sandbox_id), additional_headers=own, origin=None) as ws:
                assert json.loads(ws.recv(timeout=10))["type"] == "ready"
            assert api.get(f"/sandboxes/{sandbox_id}/pty").json()["ptys"]  # the refused ones started nothing else
        finally:
            api.delete(f"/sandboxes/{sandbox_id}", params={"force": "true"})


class ForeignSite:
    """A page on another origin (another port of the same host: the same *site*, so the
    SameSite=Strict cookie is sent) that auto-submits a form to the console's API."""

    def __init__(self, target: str) -> None:
        page = f"""<!doctype html><form id="f" method="post" action="{target}/api/v1/sandboxes"
            enctype="text/plain"><input name='{{"template":"workspace-test:latest","x":"' value='"}}'></form>
            <script>document.getElementById("f").submit()</script>""".encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture
def browser() -> Iterator[BrowserContext]:
    require_chromium()
    with chromium() as context:
        yield context


def test_in_the_browser_the_key_is_nowhere_and_a_foreign_form_is_refused(
    server: LiveServer, browser: BrowserContext
) -> None:
    page = browser.new_page()
    page.goto(server.url + "/ui/")
    page.fill("input[name=api_key]", KEY)
    page.click("#signin button[type=submit]")
    page.wait_for_selector("#create button")
    assert KEY not in page.content()
    storage = page.evaluate(
        "() => JSON.stringify([document.cookie, Object.entries(localStorage), Object.entries(sessionStorage)])"
    )
    assert KEY not in storage and "workspace_session" not in storage  # HttpOnly: not even the token
    for name in ("app.js", "api.js", "sandbox.js", "terminal.js", "index.html"):
        assert KEY not in page.evaluate(f"() => fetch('/ui/{name}').then(r => r.text())")
    assert next(c for c in browser.cookies() if c["name"] == "workspace_session")["httpOnly"] is True

    foreign = ForeignSite(server.url)
    try:
        with page.expect_response(lambda r: r.url.endswith("/api/v1/sandboxes")) as answer:
            page.goto(foreign.url)
        assert answer.value.status == 403
        screenshot(page, "06-cross-site-form-refused")
    finally:
        foreign.close()
    listed = httpx.get(server.url + "/api/v1/sandboxes", headers={"X-API-Key": KEY}).json()["sandboxes"]
    assert listed == []
