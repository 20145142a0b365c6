"""Helpers shared by the escape-attempt suite (plain httpx against the REST API).

Every helper bounds its own time: commands carry a sandbox-side timeout and every HTTP
call a client-side one, so a misbehaving server fails a test instead of hanging it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support import http_api

# Every error the service reports carries one of these codes (docs/api.md).
ERROR_CODES = {
    "INVALID_REQUEST",
    "COMMAND_NOT_FOUND",
    "NOT_A_DIRECTORY",
    "IS_A_DIRECTORY",
    "UNAUTHORIZED",
    "PERMISSION_DENIED",
    "NOT_FOUND",
    "SANDBOX_NOT_FOUND",
    "TEMPLATE_NOT_FOUND",
    "FILE_NOT_FOUND",
    "PROCESS_NOT_FOUND",
    "PTY_NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "PROCESS_TIMEOUT",
    "SANDBOX_NOT_RUNNING",
    "FILE_EXISTS",
    "DIRECTORY_NOT_EMPTY",
    "PAYLOAD_TOO_LARGE",
    "RESOURCE_EXHAUSTED",
    "INTERNAL",
    "AGENT_NOT_CONNECTED",
    "SHUTTING_DOWN",
    "DISK_QUOTA_EXCEEDED",
    "STORAGE_ERROR",
}


def new_marker(label: str = "marker") -> str:
    return f"WS-SECURITY-{label.upper()}-{secrets.token_hex(12)}"


def create_sandbox(api: httpx.Client, **body: Any) -> dict[str, Any]:
    response = api.post("/sandboxes", json=body, timeout=60)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    assert created["state"] == "running", created
    return created


def delete_sandbox(api: httpx.Client, sandbox_id: str) -> None:
    response = api.delete(f"/sandboxes/{sandbox_id}", params={"force": "true"}, timeout=60)
    assert response.status_code in (204, 404), response.text


def run(
    api: httpx.Client,
    sandbox_id: str,
    command: str,
    *args: str,
    user: str = "user",
    timeout: float = 30,
    stdin: str | None = None,
    expect_status: int | None = 200,
) -> dict[str, Any]:
    """Run one command as `user` within `timeout`; the decoded JSON answer (result or error envelope)."""
    options: dict[str, Any] = {"user": user, "timeout": timeout} | ({} if stdin is None else {"stdin": stdin})
    return http_api.run(api, sandbox_id, command, *args, expect_status=expect_status, **options)


def sh(
    api: httpx.Client,
    sandbox_id: str,
    script: str,
    *,
    user: str = "user",
    timeout: float = 30,
    expect_status: int | None = 200,
) -> dict[str, Any]:
    """`bash -c SCRIPT` in the sandbox."""
    return run(api, sandbox_id, "bash", "-c", script, user=user, timeout=timeout, expect_status=expect_status)


def py(
    api: httpx.Client,
    sandbox_id: str,
    code: str,
    *,
    user: str = "user",
    timeout: float = 30,
    expect_status: int | None = 200,
) -> dict[str, Any]:
    """`python3 -c CODE` in the sandbox (python3 is always there: the agent needs it)."""
    return run(api, sandbox_id, "python3", "-c", code, user=user, timeout=timeout, expect_status=expect_status)


def output(answer: dict[str, Any]) -> str:
    return (
        str(answer.get("stdout", ""))
        + str(answer.get("stderr", ""))
        + str(answer.get("message", ""))
        + str(answer.get("details", ""))
    )


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert isinstance(body.get("message"), str) and body["message"], body
    return body


def assert_client_error(response: httpx.Response) -> dict[str, Any]:
    """A clean 4xx with the error envelope and a known code (never 5xx, never a hang)."""
    assert 400 <= response.status_code < 500, (response.status_code, response.text)
    body: dict[str, Any] = response.json()
    assert body.get("code") in ERROR_CODES, body
    return body


def assert_service_healthy(api: httpx.Client, server_url: str) -> None:
    """The same server still serves: /healthz is 200 and a brand-new sandbox runs echo."""
    assert httpx.get(server_url + "/healthz", timeout=10).status_code == 200
    other = create_sandbox(api)
    try:
        answer = run(api, other["id"], "echo", "still-serving")
        assert answer["exit_code"] == 0 and answer["stdout"] == "still-serving\n", answer
    finally:
        delete_sandbox(api, other["id"])


def assert_sandbox_answers(api: httpx.Client, sandbox_id: str) -> None:
    state = api.get(f"/sandboxes/{sandbox_id}", timeout=10).json()
    assert state["state"] == "running", state
    answer = run(api, sandbox_id, "echo", "victim-alive")
    assert answer["stdout"] == "victim-alive\n", answer


@dataclass
class HostMarker:
    """A file on the host, readable by everybody on the host, holding a random marker."""

    directory: Path
    path: Path
    marker: str


@contextmanager
def host_marker_file() -> Iterator[HostMarker]:
    directory = Path(tempfile.mkdtemp(prefix="ws-sec-host-"))
    try:
        directory.chmod(0o755)
        marker = new_marker("host")
        path = directory / "host-secret.txt"
        path.write_text(marker + "\n")
        path.chmod(0o644)
        yield HostMarker(directory, path, marker)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def snapshot(path: Path) -> tuple[bool, bytes | None, float | None]:
    """What a host path holds now (for 'the host is unchanged' checks)."""
    if not os.path.lexists(path):
        return (False, None, None)
    st = os.lstat(path)
    data = path.read_bytes() if path.is_file() and st.st_size < 1 << 20 else None
    return (True, data, st.st_mtime)


# The start of a script that sandbox root runs to take the agent's place: it removes the
# agent's socket, listens on the same path, says "planted" and detaches its output. What
# follows it (the fake agent's own protocol) is each attack's.
PLANT_AGENT_SOCKET = r"""
path = "/run/workspace/agent.sock"
os.unlink(path)
listener = socket.socket(socket.AF_UNIX)
listener.bind(path)
listener.listen(4)
print("planted", flush=True)
os.close(1)
os.close(2)
"""
