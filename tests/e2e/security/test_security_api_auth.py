"""What an API caller can and cannot do: the API key, body limits, malformed input,
the WebSocket PTY without a key, and who counts as a caller on a keyless server."""

from __future__ import annotations

import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from tests.e2e.security.attack_support import assert_error, create_sandbox, delete_sandbox, sh
from tests.support.live_server import LiveServer, free_port, start_server, stop_server, workspace_command

KEY = "wsk-" + secrets.token_hex(16)
DUMMIES = {
    "sandbox_id": "sbx-0000000000000000",
    "pid": "4242",
    "pid_or_tag": "4242",
    "pty_id": "pty-0000",
    "name": "busybox:latest",
    "port": "8000",
    "build_id": "bld-0000000000000000",
}
EXTRA_PATHS = [
    "/openapi.json",
    "/docs",
    "/redoc",
    "/docs/oauth2-redirect",
    "/metrics",
    "/nope",
    "/api/v1",
    "/api/v1/",
    "/api/v1/nope",
    "/healthz/",
    "/HEALTHZ",
    "//healthz",
    "/healthz%2F..%2Fapi/v1/sandboxes",
    "/healthz;/api/v1/sandboxes",
]
# Sent byte for byte (HTTP clients normalise dot segments away before sending).
RAW_PATHS = ["/healthz/../api/v1/sandboxes", "/healthz/./../metrics", "/./api/v1/sandboxes", "/api/v1/../healthz"]


@pytest.fixture(scope="module")
def keyed_server() -> Iterator[LiveServer]:
    root = Path(tempfile.mkdtemp(prefix="ws-sec-keyed-"))
    root.chmod(0o755)
    server = start_server(root / "data", api_key=KEY, extra=["--pool-size", "0"])
    try:
        yield server
    finally:
        stop_server(server)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def keyed_routes(keyed_server: LiveServer) -> list[tuple[str, str]]:
    """Every (method, path) of the live OpenAPI document, path parameters filled in."""
    document = httpx.get(keyed_server.url + "/openapi.json", headers={"X-API-Key": KEY}, timeout=10).json()
    routes = []
    for template, operations in document["paths"].items():
        path = template
        for name, value in DUMMIES.items():
            path = path.replace("{" + name + "}", value)
        assert "{" not in path, template
        routes += [(method.upper(), path) for method in operations]
    assert len(routes) > 15
    # The WebSocket routes are not in the document: add their plain-HTTP face.
    return [*routes, ("GET", "/api/v1/sandboxes/sbx-0000000000000000/pty/pty-0000")]


def _assert_unauthorized(response: httpx.Response) -> None:
    assert_error(response, 401, "UNAUTHORIZED")
    assert response.headers.get("www-authenticate") == "Bearer"
    assert KEY not in response.text


def test_security_every_route_but_healthz_needs_the_key(
    keyed_server: LiveServer, keyed_routes: list[tuple[str, str]]
) -> None:
    with httpx.Client(base_url=keyed_server.url, timeout=10) as client:
        for method, path in keyed_routes:
            if path == "/healthz":
                assert client.request(method, path).status_code == 200
                continue
            _assert_unauthorized(client.request(method, path))
            # The key is checked before anything else: bodies are never parsed for strangers.
            _assert_unauthorized(
                client.request(method, path, content=b"{not json", headers={"content-type": "application/json"})
            )
        for path in EXTRA_PATHS:
            for method in ("GET", "POST", "DELETE", "PUT", "OPTIONS", "HEAD"):
                response = client.request(method, path)
                if method == "HEAD":
                    assert response.status_code == 401
                else:
                    _assert_unauthorized(response)
        oversize = client.post(
            "/api/v1/sandboxes", content=b"x" * (2 << 20), headers={"content-type": "application/json"}
        )
        _assert_unauthorized(oversize)
    host, port = keyed_server.url.removeprefix("http://").split(":")
    for path in RAW_PATHS:
        with socket.create_connection((host, int(port)), timeout=10) as conn:
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            reply = b""
            while chunk := conn.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 401 "), (path, reply[:200])


@pytest.mark.parametrize(
    "presented",
    [
        {"Authorization": "Bearer " + KEY[:-1] + ("0" if KEY[-1] != "0" else "1")},  # same length, last char off
        {"X-API-Key": KEY[:-1] + ("0" if KEY[-1] != "0" else "1")},
        {"X-API-Key": "x" * len(KEY)},
        {"Authorization": "Bearer " + KEY[:-1]},  # a prefix
        {"Authorization": "Bearer " + KEY + "0"},  # an extension
        {"Authorization": "Bearer"},
        {"Authorization": "Basic " + KEY},
        {"Authorization": KEY},
        {"X-API-Key": ""},
        {"X-Api-Key": KEY.upper()},
        {"Cookie": "api_key=" + KEY},
        {"X-API-Key": KEY + " x"},
    ],
)
def test_security_wrong_key_is_refused(keyed_server: LiveServer, presented: dict[str, str]) -> None:
    response = httpx.get(keyed_server.url + "/api/v1/sandboxes", headers=presented, timeout=10)
    _assert_unauthorized(response)


def test_security_key_in_query_string_is_refused(keyed_server: LiveServer) -> None:
    for name in ("api_key", "key", "token", "access_token"):
        _assert_unauthorized(httpx.get(keyed_server.url + "/api/v1/sandboxes", params={name: KEY}, timeout=10))


def test_security_non_ascii_key_bytes_are_refused(keyed_server: LiveServer) -> None:
    response = httpx.get(keyed_server.url + "/api/v1/sandboxes", headers=[(b"X-API-Key", b"\xfc\xff k")], timeout=10)
    assert response.status_code in (400, 401)


@pytest.mark.parametrize("header", ["Authorization", "X-API-Key"])
def test_security_correct_key_is_accepted_in_either_header(keyed_server: LiveServer, header: str) -> None:
    value = "Bearer " + KEY if header == "Authorization" else KEY
    response = httpx.get(keyed_server.url + "/api/v1/sandboxes", headers={header: value}, timeout=10)
    assert response.status_code == 200, response.text
    assert "sandboxes" in response.json()


def _keyed(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url + "/api/v1", headers={"X-API-Key": KEY}, timeout=60)


@pytest.mark.parametrize(
    "route",
    ["/sandboxes", "/sandboxes/sbx-0000000000000000/processes/run", "/sandboxes/sbx-0000000000000000/files/mkdir"],
)
def test_security_oversize_json_body_is_413(keyed_server: LiveServer, route: str) -> None:
    big = b'{"name": "' + b"a" * (2 << 20) + b'"}'

    def chunks() -> Iterator[bytes]:
        yield big[:10]
        for offset in range(10, len(big), 65536):
            yield big[offset : offset + 65536]

    with _keyed(keyed_server) as client:
        declared = client.post(route, content=big, headers={"content-type": "application/json"})
        assert_error(declared, 413, "PAYLOAD_TOO_LARGE")
        streamed = client.post(route, content=chunks(), headers={"content-type": "application/json"})
        assert_error(streamed, 413, "PAYLOAD_TOO_LARGE")
        assert client.get("/sandboxes").status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        b"{",
        b"{not json}",
        b'{"command": "echo",}',
        b"[1, 2",
        b"\xff\xfe\x00",
        b'{"a": ' * 5000,
        b"NaN",
        b"",
        b"null",
        b"[]",
        b'"str"',
        b"1e999999",
    ],
)
def test_security_malformed_json_is_400(keyed_server: LiveServer, body: bytes) -> None:
    with _keyed(keyed_server) as client:
        for route in ("/sandboxes/sbx-0000000000000000/processes/run", "/sandboxes/sbx-0000000000000000/files/move"):
            response = client.post(route, content=body, headers={"content-type": "application/json"})
            assert_error(response, 400, "INVALID_REQUEST")
        if body not in (b"", b"null"):  # an absent body means "defaults" for create
            response = client.post("/sandboxes", content=body, headers={"content-type": "application/json"})
            assert_error(response, 400, "INVALID_REQUEST")
        assert client.get("/sandboxes").status_code == 200


@pytest.mark.parametrize(
    "path", ["/api/v1/sandboxes/sbx-0000000000000000/pty", "/api/v1/sandboxes/sbx-0000000000000000/pty/pty-0000"]
)
@pytest.mark.parametrize(
    "headers",
    [{}, {"X-API-Key": "x" * len(KEY)}, {"Authorization": "Bearer nope"}],
    ids=["no-key", "wrong-key", "wrong-bearer"],
)
def test_security_websocket_pty_without_key_is_refused(
    keyed_server: LiveServer, path: str, headers: dict[str, str]
) -> None:
    url = keyed_server.url.replace("http://", "ws://") + path
    with connect(url, additional_headers=headers, open_timeout=10) as ws:
        frame = ws.recv(timeout=10)
        assert isinstance(frame, str)
        assert '"UNAUTHORIZED"' in frame and '"error"' in frame
        with pytest.raises(ConnectionClosed):
            ws.recv(timeout=10)
        assert ws.close_code == 4401


def test_security_websocket_pty_with_key_reaches_the_route(keyed_server: LiveServer) -> None:
    url = keyed_server.url.replace("http://", "ws://") + "/api/v1/sandboxes/sbx-0000000000000000/pty"
    with connect(url, additional_headers={"X-API-Key": KEY}, open_timeout=10) as ws:
        frame = ws.recv(timeout=10)
        assert '"SANDBOX_NOT_FOUND"' in str(frame)


def test_attack_read_api_key_from_inside_sandbox(keyed_server: LiveServer) -> None:
    """Nothing inside a sandbox carries the server's API key: not the agent's environment
    or command line, not /etc, /run, /opt or the writable trees."""
    with _keyed(keyed_server) as client:
        sandbox = create_sandbox(client)
        try:
            answer = sh(
                client,
                sandbox["id"],
                f"grep -rls -- '{KEY}' /proc/1/environ /proc/1/cmdline /proc/self/environ /etc /run /opt "
                "/tmp /var/tmp /workspace /home /root 2>/dev/null; env; true",
                user="root",
                timeout=60,
            )
            assert KEY not in answer["stdout"], answer
        finally:
            delete_sandbox(client, sandbox["id"])


@pytest.mark.parametrize("host", ["0.0.0.0", "::"])
def test_security_keyless_server_refuses_non_loopback_bind(host: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="ws-sec-bind-"))
    try:
        for key_args in ([], ["--api-key", ""]):
            result = subprocess.run(
                [
                    *workspace_command(),
                    "serve",
                    "--host",
                    host,
                    "--port",
                    str(free_port()),
                    "--data-dir",
                    str(root / "data"),
                    *key_args,
                ],
                capture_output=True,
                text=True,
                timeout=30,
                env={"PATH": "/usr/bin:/bin"},
            )
            assert result.returncode != 0
            assert "without an API key" in result.stderr + result.stdout
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- keyless server, browsers


def test_attack_dns_rebinding_with_foreign_host_header(workspace_server: LiveServer) -> None:
    port = workspace_server.url.rsplit(":", 1)[1]
    response = httpx.get(
        workspace_server.url + "/api/v1/sandboxes", headers={"Host": f"attacker.example:{port}"}, timeout=10
    )
    assert 400 <= response.status_code < 500, response.status_code


def test_attack_cross_site_request_creates_sandbox(workspace_server: LiveServer, api: httpx.Client) -> None:
    response = httpx.post(
        workspace_server.url + "/api/v1/sandboxes",
        headers={"Origin": "http://attacker.example", "Content-Type": "text/plain"},
        timeout=60,
    )
    created: dict[str, Any] = response.json() if response.status_code == 201 else {}
    if created.get("id"):
        delete_sandbox(api, created["id"])
    assert response.status_code in (400, 403), response.status_code


@pytest.mark.parametrize("with_key", [False, True], ids=["no-key", "key"])
def test_security_oversize_headers_are_431(keyed_server: LiveServer, with_key: bool) -> None:
    auth = {"X-API-Key": KEY} if with_key else {}
    for headers in ({**auth, "X-Junk": "a" * (40 << 10)}, {**auth, **{f"X-J{i}": "a" * 100 for i in range(400)}}):
        response = httpx.get(keyed_server.url + "/api/v1/sandboxes", headers=headers, timeout=10)
        assert_error(response, 431, "HEADERS_TOO_LARGE")
    assert httpx.get(keyed_server.url + "/healthz", timeout=10).status_code == 200


def test_security_websocket_oversize_frame_is_refused(workspace_server: LiveServer, api: httpx.Client) -> None:
    """A PTY frame over 1 MiB closes the socket (1009); the server carries on."""
    sandbox = create_sandbox(api)
    try:
        url = workspace_server.url.replace("http://", "ws://") + f"/api/v1/sandboxes/{sandbox['id']}/pty"
        with connect(url, open_timeout=10) as ws:
            assert '"ready"' in str(ws.recv(timeout=10))
            ws.send(b"x" * (2 << 20))
            with pytest.raises(ConnectionClosed):
                while True:
                    ws.recv(timeout=10)
            assert ws.close_code == 1009
        assert sh(api, sandbox["id"], "echo alive")["stdout"] == "alive\n"
    finally:
        delete_sandbox(api, sandbox["id"])


@pytest.mark.parametrize(
    "body",
    [
        {"cpu": 8.5},
        {"cpu": 0.01},
        {"memory_mb": 16385},
        {"memory_mb": 16},
        {"pids": 4097},
        {"pids": 4},
        {"disk_mb": 65537},
        {"disk_mb": 4},
        {"memory_mb": 1 << 20},
        {"cpu": -1},
        {"pids": 0},
    ],
)
def test_security_sandbox_limits_are_bounded(api: httpx.Client, body: dict[str, Any]) -> None:
    """A caller chooses limits only within the server's bounds (cpu 0.05-8, memory 32-16384
    MiB, pids 8-4096, disk 8-65536 MiB by default)."""
    response = api.post("/sandboxes", json=body)
    if response.status_code == 201:
        delete_sandbox(api, response.json()["id"])
    assert_error(response, 400, "INVALID_REQUEST")
