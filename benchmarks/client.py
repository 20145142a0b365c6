"""A thin client of the Workspace REST/SSE/WebSocket API (docs/api.md), on plain httpx
and websockets so the benchmark does not depend on the SDK."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

from benchmarks.sse import SseParser, SseTally

API = "/api/v1"
UPLOAD_PIECE = 1 << 20
CREATE_COUNT = re.compile(r'^workspace_sandbox_create_seconds_count\{source="([^"]+)"\}\s+([0-9.eE+-]+)$', re.MULTILINE)
POOL_GAUGE = re.compile(r'^workspace_pool_size\{template="([^"]+)"\}\s+([0-9.eE+-]+)$', re.MULTILINE)


class ApiError(Exception):
    """The server answered with an error envelope (or something unexpected)."""


def _check(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        raise ApiError(
            f"{response.request.method} {response.request.url.path}: {response.status_code} {response.text[:500]}"
        )
    return response


class Api:
    """One HTTP connection (keep-alive) to the server; not thread-safe: one per thread."""

    def __init__(self, base_url: str, timeout: float = 120.0) -> None:
        self.base_url = base_url
        self.http = httpx.Client(
            base_url=base_url, timeout=timeout, limits=httpx.Limits(max_connections=4, max_keepalive_connections=4)
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ sandboxes
    def create(self, **params: Any) -> dict[str, Any]:
        body: dict[str, Any] = _check(self.http.post(f"{API}/sandboxes", json=params)).json()
        return body

    def delete(self, sandbox_id: str, force: bool = True) -> None:
        _check(self.http.delete(f"{API}/sandboxes/{sandbox_id}", params={"force": str(force).lower()}))

    def list_ids(self) -> list[str]:
        body = _check(self.http.get(f"{API}/sandboxes")).json()
        return [str(s["id"]) for s in body["sandboxes"]]

    def templates(self) -> list[str]:
        """The built-in templates (image templates have a warm pool only when named: --pool)."""
        body = _check(self.http.get(f"{API}/templates")).json()
        return [str(t["name"]) for t in body["templates"] if t.get("source", "builtin") == "builtin"]

    def pool_sizes(self) -> dict[str, float] | None:
        """Warm sandboxes per template from /metrics; None if the gauge is not exported."""
        text = _check(self.http.get("/metrics")).text
        found = {m.group(1): float(m.group(2)) for m in POOL_GAUGE.finditer(text)}
        return found or None

    def create_sources(self) -> dict[str, float]:
        """How many creates the server served from the pool and cold so far (/metrics)."""
        text = _check(self.http.get("/metrics")).text
        return {m.group(1): float(m.group(2)) for m in CREATE_COUNT.finditer(text)}

    def wait_pool(self, per_template: int, timeout: float = 60.0) -> bool:
        """Wait until every template's warm pool holds `per_template` sandboxes."""
        if per_template <= 0:
            return True
        started = time.monotonic()
        names = self.templates()
        while time.monotonic() < started + timeout:
            sizes = self.pool_sizes()
            if sizes is None and time.monotonic() > started + 10:
                time.sleep(1.0)  # the gauge never showed up: give the refill a generous second
                return False
            if sizes is not None and all(sizes.get(name, 0) >= per_template for name in names):
                return True
            time.sleep(0.025)
        return False

    # ------------------------------------------------------------------ processes
    def health(self) -> None:
        _check(self.http.get("/healthz"))

    def exists(self, sandbox_id: str, path: str) -> bool:
        """A one-answer agent operation that starts no process."""
        answer: dict[str, Any] = _check(
            self.http.get(f"{API}/sandboxes/{sandbox_id}/files/exists", params={"path": path})
        ).json()
        return bool(answer["exists"])

    def list_files(self, sandbox_id: str, path: str) -> int:
        """A directory listing (streamed by the server); the number of entries."""
        answer: dict[str, Any] = _check(
            self.http.get(f"{API}/sandboxes/{sandbox_id}/files/list", params={"path": path})
        ).json()
        return len(answer["files"])

    def run(self, sandbox_id: str, command: str, *args: str) -> dict[str, Any]:
        body: dict[str, Any] = _check(
            self.http.post(f"{API}/sandboxes/{sandbox_id}/processes/run", json={"command": command, "args": list(args)})
        ).json()
        return body

    def stream(self, sandbox_id: str, command: str, *args: str) -> SseTally:
        """Run a command with POST /processes/stream, counting what arrives."""
        tally = SseTally()
        parser = SseParser()
        payload = {"command": command, "args": list(args)}
        with self.http.stream("POST", f"{API}/sandboxes/{sandbox_id}/processes/stream", json=payload) as response:
            if response.status_code >= 400:
                response.read()
                _check(response)
            for chunk in response.iter_raw():
                for block in parser.blocks(chunk):
                    tally.add_block(block)
        return tally

    # ------------------------------------------------------------------ files
    def write_file(self, sandbox_id: str, path: str, data: bytes) -> dict[str, Any]:
        """PUT the bytes, sent in 1 MiB pieces with an explicit Content-Length: handed one
        big buffer, httpcore's send loop re-slices (copies) the rest after every send(),
        which is quadratic and made 256 MiB uploads client-bound at ~40 MB/s."""
        view = memoryview(data)

        def pieces() -> Iterator[bytes]:
            for offset in range(0, len(view), UPLOAD_PIECE):
                yield bytes(view[offset : offset + UPLOAD_PIECE])

        body: dict[str, Any] = _check(
            self.http.put(
                f"{API}/sandboxes/{sandbox_id}/files",
                params={"path": path},
                content=pieces(),
                headers={"content-type": "application/octet-stream", "Content-Length": str(len(data))},
            )
        ).json()
        return body

    def read_file(self, sandbox_id: str, path: str) -> int:
        """Download and discard; returns the number of bytes received."""
        received = 0
        with self.http.stream("GET", f"{API}/sandboxes/{sandbox_id}/files", params={"path": path}) as response:
            if response.status_code >= 400:
                response.read()
                _check(response)
            for chunk in response.iter_raw(1 << 20):
                received += len(chunk)
        return received

    def remove_file(self, sandbox_id: str, path: str) -> None:
        _check(self.http.delete(f"{API}/sandboxes/{sandbox_id}/files", params={"path": path}))


# --------------------------------------------------------------------------- PTY


class PtyClient:
    """An interactive terminal over the WebSocket: binary frames are terminal data."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.ready: dict[str, Any] = {}

    def wait_ready(self, timeout: float = 30.0) -> dict[str, Any]:
        first = self.socket.recv(timeout)
        if not isinstance(first, str):
            raise ApiError("the PTY's first frame was not the ready message")
        message = json.loads(first)
        if message.get("type") != "ready":
            raise ApiError(f"PTY refused: {message}")
        self.ready = message
        return self.ready

    def send(self, data: bytes) -> None:
        self.socket.send(data)

    def recv_data(self, timeout: float) -> bytes | None:
        """The next data frame, or None after `timeout` seconds of silence."""
        try:
            frame = self.socket.recv(timeout)
        except TimeoutError:
            return None
        if isinstance(frame, str):
            message = json.loads(frame)
            raise ApiError(f"PTY ended: {message}")
        return frame

    def drain(self, quiet: float, limit: float = 5.0) -> bytes:
        """Read until the terminal has been silent for `quiet` seconds."""
        out = bytearray()
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            data = self.recv_data(quiet)
            if data is None:
                break
            out += data
        return bytes(out)


@contextmanager
def open_pty(base_url: str, sandbox_id: str, shell: str | None = None) -> Iterator[PtyClient]:
    url = base_url.replace("http://", "ws://", 1) + f"{API}/sandboxes/{sandbox_id}/pty?cols=80&rows=24"
    if shell:
        url += f"&shell={shell}"
    with connect(url, open_timeout=30, max_size=None, compression=None) as socket:
        client = PtyClient(socket)
        client.wait_ready()
        try:
            yield client
        finally:
            try:
                socket.send(json.dumps({"type": "kill"}))
            except Exception:  # best effort: the sandbox is deleted anyway
                pass
