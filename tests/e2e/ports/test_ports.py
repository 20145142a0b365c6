"""Reaching servers inside sandboxes: preview hosts, the path-based proxy, port forwarding.

A real web server (tests/support/sandbox_web_server.py) runs inside a real sandbox without
network; everything reaches it through the agent's port tunnel."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets.sync.client

from tests.support.cli import WORKSPACE, cli_env, run_cli, run_json
from tests.support.live_server import LiveServer, data_root, start_server, stop_server
from workspace_sdk import AsyncWorkspaceClient, WorkspaceClient

WEB_PORT = 8000
ECHO_PORT = 7000
SERVER_SCRIPT = Path(__file__).resolve().parents[2] / "support" / "sandbox_web_server.py"
TCP_ECHO = (
    "import socket,threading\n"
    f"s=socket.create_server(('127.0.0.1',{ECHO_PORT}))\n"
    "def echo(c):\n"
    "    while True:\n"
    "        d=c.recv(65536)\n"
    "        if not d: break\n"
    "        c.sendall(d)\n"
    "    c.close()\n"
    "while True:\n"
    "    c,_=s.accept(); threading.Thread(target=echo,args=(c,),daemon=True).start()\n"
)


def wait_for_port(api: httpx.Client, sandbox_id: str, port: int) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if api.get(f"/sandboxes/{sandbox_id}/ports/{port}/headers").status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing listens on port {port} in {sandbox_id}")


def start_web_server(api: httpx.Client, sandbox_id: str) -> None:
    put = api.put(
        f"/sandboxes/{sandbox_id}/files", params={"path": "/workspace/server.py"}, content=SERVER_SCRIPT.read_bytes()
    )
    assert put.status_code == 200, put.text
    started = api.post(
        f"/sandboxes/{sandbox_id}/processes",
        json={"command": "python3", "args": ["/workspace/server.py", str(WEB_PORT)], "tag": "web"},
    )
    assert started.status_code == 201, started.text
    wait_for_port(api, sandbox_id, WEB_PORT)


def preview_host(sandbox_id: str, port: int, server: LiveServer) -> str:
    return f"{port}-{sandbox_id}.localhost:{server.url.rsplit(':', 1)[1]}"


def preview_get(server: LiveServer, sandbox_id: str, port: int, path: str, **kwargs: Any) -> httpx.Response:
    """A request to the preview host (sent to the server's address, with the preview Host)."""
    headers = {"Host": preview_host(sandbox_id, port, server), **kwargs.pop("headers", {})}
    return httpx.get(server.url + path, headers=headers, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def web(workspace_server: LiveServer) -> Iterator[tuple[LiveServer, str]]:
    with httpx.Client(base_url=workspace_server.url + "/api/v1", timeout=60) as api:
        created = api.post("/sandboxes", json={})
        assert created.status_code == 201, created.text
        sandbox_id = created.json()["id"]
        start_web_server(api, sandbox_id)
        yield workspace_server, sandbox_id
        api.delete(f"/sandboxes/{sandbox_id}", params={"force": "true"})


@pytest.fixture
def api(workspace_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=workspace_server.url + "/api/v1", timeout=60) as client:
        yield client


def preview_url(api: httpx.Client, sandbox_id: str, port: int, **body: Any) -> dict[str, Any]:
    response = api.post(f"/sandboxes/{sandbox_id}/preview-urls", json={"port": port, **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


# ------------------------------------------------------------------ HTTP through both addresses
def test_path_based_proxy_serves_files_and_streams_large_downloads_byte_for_byte(
    web: tuple[LiveServer, str], api: httpx.Client
) -> None:
    _, sandbox_id = web
    made = api.post(
        f"/sandboxes/{sandbox_id}/processes/run",
        json={"command": "sh", "args": ["-c", "head -c 268435456 /dev/urandom > /workspace/big && sha256sum big"]},
    )
    expected = made.json()["stdout"].split()[0]
    digest = hashlib.sha256()
    size = 0
    with api.stream("GET", f"/sandboxes/{sandbox_id}/ports/{WEB_PORT}/big") as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(256 * 1024 * 1024)
        for chunk in response.iter_bytes():
            digest.update(chunk)
            size += len(chunk)
    assert size == 256 * 1024 * 1024
    assert digest.hexdigest() == expected
    api.delete(f"/sandboxes/{sandbox_id}/files", params={"path": "/workspace/big"})


def test_streaming_response_arrives_piece_by_piece(web: tuple[LiveServer, str], api: httpx.Client) -> None:
    _, sandbox_id = web
    arrivals = []
    with api.stream("GET", f"/sandboxes/{sandbox_id}/ports/{WEB_PORT}/stream") as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        for line in response.iter_lines():
            if line.startswith("data:"):
                arrivals.append((time.monotonic(), line))
    assert [line for _, line in arrivals] == [f"data: tick {i}" for i in range(5)]
    assert arrivals[-1][0] - arrivals[0][0] > 0.5  # relayed as they came, not buffered to the end


def test_large_upload_streams_into_the_sandbox_server(web: tuple[LiveServer, str], api: httpx.Client) -> None:
    _, sandbox_id = web
    body = os.urandom(32 * 1024 * 1024)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 1 << 20):
            yield body[start : start + (1 << 20)]

    chunked = api.post(f"/sandboxes/{sandbox_id}/ports/{WEB_PORT}/hash", content=chunks())
    assert chunked.status_code == 200, chunked.text
    assert chunked.text == hashlib.sha256(body).hexdigest()
    sized = api.post(f"/sandboxes/{sandbox_id}/ports/{WEB_PORT}/hash", content=body)
    assert sized.text == hashlib.sha256(body).hexdigest()


def test_websocket_echo_through_the_proxy(web: tuple[LiveServer, str], api: httpx.Client) -> None:
    server, sandbox_id = web
    ws_url = server.url.replace("http://", "ws://") + f"/api/v1/sandboxes/{sandbox_id}/ports/{WEB_PORT}/ws"
    with websockets.sync.client.connect(ws_url) as connection:
        connection.send("hello")
        assert connection.recv(timeout=10) == "hello"
        blob = os.urandom(200_000)
        connection.send(blob)
        assert connection.recv(timeout=10) == blob
    token = preview_url(api, sandbox_id, WEB_PORT)["token"]
    # The preview name needs no DNS here: the socket goes to the server, the URI names the host.
    host_url = f"ws://{preview_host(sandbox_id, WEB_PORT, server)}/ws?workspace_token={token}"
    sock = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
    with websockets.sync.client.connect(host_url, sock=sock) as connection:
        connection.send("through the preview host")
        assert connection.recv(timeout=10) == "through the preview host"


def test_preview_host_with_token_sets_a_host_only_cookie_and_then_serves(
    web: tuple[LiveServer, str], api: httpx.Client
) -> None:
    server, sandbox_id = web
    created = preview_url(api, sandbox_id, WEB_PORT)
    assert created["url"].startswith(f"http://{preview_host(sandbox_id, WEB_PORT, server)}/?workspace_token=")
    first = preview_get(server, sandbox_id, WEB_PORT, "/headers", params={"workspace_token": created["token"]})
    assert first.status_code == 303
    assert first.headers["location"] == "/headers"  # the token leaves the address bar
    cookie = first.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Domain" not in cookie
    page = preview_get(server, sandbox_id, WEB_PORT, "/headers", cookies={"workspace_preview": created["token"]})
    assert page.status_code == 200
    seen = page.json()
    assert "workspace_preview" not in seen.get("cookie", "")  # our credential never reaches the sandbox
    assert seen["x-forwarded-host"] == preview_host(sandbox_id, WEB_PORT, server)


# ------------------------------------------------------------------ access control
def test_private_port_refuses_missing_forged_foreign_and_expired_tokens(
    web: tuple[LiveServer, str], api: httpx.Client
) -> None:
    server, sandbox_id = web
    assert preview_get(server, sandbox_id, WEB_PORT, "/headers").status_code == 401
    token = preview_url(api, sandbox_id, WEB_PORT)["token"]
    body, _, signature = token.partition(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    forged_body = base64.urlsafe_b64encode(json.dumps({**claims, "e": claims["e"] + 10**6}).encode()).rstrip(b"=")
    for bad in (f"{forged_body.decode()}.{signature}", token[:-2] + "AA", "garbage"):
        refused = preview_get(server, sandbox_id, WEB_PORT, "/headers", cookies={"workspace_preview": bad})
        assert refused.status_code == 401, bad
        assert refused.json()["code"] == "UNAUTHORIZED"
    other_port = preview_url(api, sandbox_id, WEB_PORT + 1)["token"]
    refused = preview_get(server, sandbox_id, WEB_PORT, "/headers", cookies={"workspace_preview": other_port})
    assert refused.status_code == 401 and "another sandbox or port" in refused.json()["message"]
    other = api.post("/sandboxes", json={}).json()["id"]
    try:
        foreign = preview_url(api, other, WEB_PORT)["token"]
        refused = preview_get(server, sandbox_id, WEB_PORT, "/headers", cookies={"workspace_preview": foreign})
        assert refused.status_code == 401
    finally:
        api.delete(f"/sandboxes/{other}", params={"force": "true"})
    short = preview_url(api, sandbox_id, WEB_PORT, expires_in=1)["token"]
    assert (
        preview_get(server, sandbox_id, WEB_PORT, "/headers", cookies={"workspace_preview": short}).status_code == 200
    )
    time.sleep(2.1)
    expired = preview_get(server, sandbox_id, WEB_PORT, "/headers", cookies={"workspace_preview": short})
    assert expired.status_code == 401 and "expired" in expired.json()["message"]


def test_public_port_needs_no_token_until_revoked(web: tuple[LiveServer, str], api: httpx.Client) -> None:
    server, sandbox_id = web
    public = preview_url(api, sandbox_id, WEB_PORT, public=True)
    assert public["public"] is True and public["token"] is None
    assert api.get(f"/sandboxes/{sandbox_id}/public-ports").json() == {"ports": [WEB_PORT], "every_port": False}
    assert preview_get(server, sandbox_id, WEB_PORT, "/headers").status_code == 200
    assert api.delete(f"/sandboxes/{sandbox_id}/public-ports/{WEB_PORT}").json() == {"ports": [], "every_port": False}
    assert preview_get(server, sandbox_id, WEB_PORT, "/headers").status_code == 401


# ------------------------------------------------------------------ faults
def test_port_nobody_listens_on_answers_502_at_once(web: tuple[LiveServer, str], api: httpx.Client) -> None:
    _, sandbox_id = web
    started = time.monotonic()
    response = api.get(f"/sandboxes/{sandbox_id}/ports/9/")
    assert response.status_code == 502
    assert response.json()["code"] == "PORT_UNREACHABLE"
    assert "port 9" in response.json()["message"]
    assert time.monotonic() - started < 5


def test_unknown_and_stopped_sandboxes_get_the_apis_errors(workspace_server: LiveServer, api: httpx.Client) -> None:
    assert api.get("/sandboxes/sbx-000000000000dead/ports/80/").json()["code"] == "SANDBOX_NOT_FOUND"
    unknown = preview_get(workspace_server, "sbx-000000000000dead", 80, "/")
    assert unknown.status_code == 404 and unknown.json()["code"] == "SANDBOX_NOT_FOUND"
    sandbox_id = api.post("/sandboxes", json={}).json()["id"]
    try:
        assert api.post(f"/sandboxes/{sandbox_id}/stop").status_code == 200
        stopped = api.get(f"/sandboxes/{sandbox_id}/ports/80/")
        assert stopped.status_code == 409 and stopped.json()["code"] == "SANDBOX_NOT_RUNNING"
    finally:
        api.delete(f"/sandboxes/{sandbox_id}", params={"force": "true"})
    for bad in ("0", "65536"):
        assert api.get(f"/sandboxes/{sandbox_id}/ports/{bad}/").status_code in (400, 404)


def test_deleting_the_sandbox_ends_its_open_connections(workspace_server: LiveServer, api: httpx.Client) -> None:
    sandbox_id = api.post("/sandboxes", json={}).json()["id"]
    start_web_server(api, sandbox_id)
    url = f"{workspace_server.url}/api/v1/sandboxes/{sandbox_id}/ports/{WEB_PORT}"

    async def main() -> None:
        async with httpx.AsyncClient(timeout=60) as client:
            pending = asyncio.create_task(client.get(f"{url}/never"))
            streaming = await client.send(client.build_request("GET", f"{url}/stream?forever"), stream=True)
            await asyncio.sleep(0.5)
            deleted = await client.delete(
                f"{workspace_server.url}/api/v1/sandboxes/{sandbox_id}", params={"force": "true"}
            )
            assert deleted.status_code == 204
            # The tunnels died with the agent: the waiting request is answered, the stream ends.
            answered = await asyncio.wait_for(pending, 20)
            assert answered.status_code in (502, 503), answered.text
            with pytest.raises(httpx.HTTPError):
                await asyncio.wait_for(streaming.aread(), 20)

    asyncio.run(main())


# ------------------------------------------------------------------ a server with a key, and small caps
@pytest.fixture(scope="module")
def keyed() -> Iterator[tuple[LiveServer, str]]:
    root = data_root("ws-ports-")
    server = start_server(root / "data", api_key="port-key", extra=["--pool-size", "0", "--max-port-connections", "3"])
    try:
        with httpx.Client(
            base_url=server.url + "/api/v1", timeout=60, headers={"Authorization": "Bearer port-key"}
        ) as api:
            sandbox_id = api.post("/sandboxes", json={}).json()["id"]
            start_web_server(api, sandbox_id)
            yield server, sandbox_id
            api.delete(f"/sandboxes/{sandbox_id}", params={"force": "true"})
    finally:
        stop_server(server)


def test_api_credentials_never_reach_the_sandbox(keyed: tuple[LiveServer, str]) -> None:
    server, sandbox_id = keyed
    url = f"{server.url}/api/v1/sandboxes/{sandbox_id}/ports/{WEB_PORT}/headers"
    assert httpx.get(url).status_code == 401  # the path-based proxy is behind the API key
    for headers in ({"Authorization": "Bearer port-key"}, {"X-API-Key": "port-key"}):
        seen = httpx.get(url, headers={**headers, "X-Other": "kept"}).json()
        assert "port-key" not in json.dumps(seen)
        assert seen["x-other"] == "kept"
    # The preview host never takes the API key as a credential.
    as_key = preview_get(server, sandbox_id, WEB_PORT, "/headers", headers={"Authorization": "Bearer port-key"})
    assert as_key.status_code == 401


def test_connections_per_sandbox_are_capped_and_a_never_answering_server_ties_up_only_its_own(
    keyed: tuple[LiveServer, str],
) -> None:
    server, sandbox_id = keyed
    headers = {"Authorization": "Bearer port-key"}
    url = f"{server.url}/api/v1/sandboxes/{sandbox_id}/ports/{WEB_PORT}"

    async def main() -> None:
        async with httpx.AsyncClient(headers=headers, timeout=60) as client:
            stuck = [asyncio.create_task(client.get(f"{url}/never")) for _ in range(3)]
            await asyncio.sleep(1.0)
            over = await client.get(f"{url}/headers")
            assert over.status_code == 429 and over.json()["code"] == "RESOURCE_EXHAUSTED"
            for task in stuck:
                task.cancel()
            await asyncio.gather(*stuck, return_exceptions=True)
            deadline = time.monotonic() + 10
            while (await client.get(f"{url}/headers")).status_code != 200:
                assert time.monotonic() < deadline, "closed connections were not given back"
                await asyncio.sleep(0.2)

    asyncio.run(main())


# ------------------------------------------------------------------ TCP port forwarding, SDK
def test_port_forward_relays_raw_tcp_sync_and_async(web: tuple[LiveServer, str], api: httpx.Client) -> None:
    server, sandbox_id = web
    api.put(f"/sandboxes/{sandbox_id}/files", params={"path": "/workspace/echo.py"}, content=TCP_ECHO.encode())
    api.post(f"/sandboxes/{sandbox_id}/processes", json={"command": "python3", "args": ["/workspace/echo.py"]})
    payload = os.urandom(3 * 1024 * 1024)

    def round_trip(port: int) -> bytes:
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(payload)
            received = b""
            while len(received) < len(payload):
                chunk = sock.recv(1 << 20)
                assert chunk, "the forward closed early"
                received += chunk
            return received

    with WorkspaceClient(server.url) as client:
        deadline = time.monotonic() + 20
        with client.sandbox.port_forward(sandbox_id, ECHO_PORT) as forward:
            assert forward.local_port > 0
            while True:
                try:
                    assert round_trip(forward.local_port) == payload
                    break
                except (AssertionError, OSError):
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

    async def async_round_trip() -> None:
        async with AsyncWorkspaceClient(server.url) as client:
            async with client.sandbox.port_forward(sandbox_id, ECHO_PORT) as forward:
                reader, writer = await asyncio.open_connection("127.0.0.1", forward.local_port)
                writer.write(payload)
                await writer.drain()
                assert await reader.readexactly(len(payload)) == payload
                writer.close()

    asyncio.run(async_round_trip())


def test_cli_port_forward_and_url(web: tuple[LiveServer, str], api: httpx.Client) -> None:
    server, sandbox_id = web
    api.put(f"/sandboxes/{sandbox_id}/files", params={"path": "/workspace/echo.py"}, content=TCP_ECHO.encode())
    api.post(f"/sandboxes/{sandbox_id}/processes", json={"command": "python3", "args": ["/workspace/echo.py"]})
    shown = run_json(server.url, "url", sandbox_id, str(WEB_PORT))
    assert shown["url"].startswith(f"http://{WEB_PORT}-{sandbox_id}.localhost:")
    forwarding = subprocess.Popen(
        [str(WORKSPACE), "port-forward", sandbox_id, f"0:{ECHO_PORT}", "--json"],
        env=cli_env(server.url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert forwarding.stdout is not None
        printed = b""
        while not printed.rstrip().endswith(b"}"):  # one JSON document, however it is laid out
            line = forwarding.stdout.readline()
            assert line, forwarding.stderr.read() if forwarding.stderr else "no output"
            printed += line
        local_port = json.loads(printed)["local_port"]
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", local_port), timeout=10) as sock:
                    sock.sendall(b"ping through the cli")
                    assert sock.recv(100) == b"ping through the cli"
                break
            except (AssertionError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
    finally:
        forwarding.terminate()
        forwarding.wait(10)
    unknown = run_cli(server.url, "port-forward", "sbx-000000000000dead", "5432")
    assert unknown.returncode != 0 and b"not found" in unknown.stderr


def test_sdk_get_url_and_public_ports(web: tuple[LiveServer, str]) -> None:
    server, sandbox_id = web
    with WorkspaceClient(server.url) as client:
        url = client.sandbox.get_url(sandbox_id, WEB_PORT)
        assert url.startswith(f"http://{WEB_PORT}-{sandbox_id}.localhost:") and "workspace_token=" in url
        public = client.sandbox.get_url(sandbox_id, WEB_PORT + 5, public=True)
        assert "workspace_token" not in public
        assert client.sandbox.list_public_ports(sandbox_id) == [WEB_PORT + 5]
        assert client.sandbox.revoke_public_port(sandbox_id, WEB_PORT + 5) == []


# ------------------------------------------------------------------ a real browser
def test_browser_opens_a_preview_url_on_localhost(
    web: tuple[LiveServer, str], api: httpx.Client, tmp_path: Path
) -> None:
    chromium = next((p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p)), None)
    if chromium is None:
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    _, sandbox_id = web
    api.put(
        f"/sandboxes/{sandbox_id}/files",
        params={"path": "/workspace/index.html"},
        content=b"<html><body><h1 id=t>served from a sandbox</h1></body></html>",
    )
    url = preview_url(api, sandbox_id, WEB_PORT)["url"]
    dom = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "served from a sandbox" in dom.stdout, dom.stderr[-2000:]
