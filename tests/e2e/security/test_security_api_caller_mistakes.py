"""Caller mistakes on the files API answer a 4xx with a short message, never 500 INTERNAL:
copying or moving something onto or into itself, moving `/` or a mount point, deleting a
mount point, copying a tree with files that cannot be copied (fifos, sockets)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.e2e.security.attack_support import assert_client_error, sh

MISTAKES: list[tuple[str, str, str, dict[str, Any]]] = [
    (
        "copy-file-onto-itself",
        "post",
        "/files/copy",
        {"json": {"source": "/workspace/f", "destination": "/workspace/f"}},
    ),
    (
        "copy-dir-onto-itself",
        "post",
        "/files/copy",
        {"json": {"source": "/workspace/d", "destination": "/workspace/d"}},
    ),
    (
        "copy-dir-into-itself",
        "post",
        "/files/copy",
        {"json": {"source": "/workspace/d", "destination": "/workspace/d/sub/x"}},
    ),
    ("move-root", "post", "/files/move", {"json": {"source": "/", "destination": "/workspace/root"}}),
    ("move-mount-point", "post", "/files/move", {"json": {"source": "/workspace", "destination": "/tmp/ws"}}),
    (
        "move-dir-into-itself",
        "post",
        "/files/move",
        {"json": {"source": "/workspace/d", "destination": "/workspace/d/sub/y"}},
    ),
    ("delete-dev-shm", "delete", "/files", {"params": {"path": "/dev/shm", "recursive": "true"}}),
    ("delete-mount-point", "delete", "/files", {"params": {"path": "/tmp", "recursive": "true"}}),
    (
        "copy-tree-with-special-files",
        "post",
        "/files/copy",
        {"json": {"source": "/workspace/t", "destination": "/workspace/t2"}},
    ),
]


@pytest.mark.parametrize(("name", "method", "route", "arguments"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_security_caller_mistakes_are_4xx_with_a_short_message(
    api: httpx.Client, sandbox: dict[str, Any], name: str, method: str, route: str, arguments: dict[str, Any]
) -> None:
    sandbox_id = sandbox["id"]
    sh(
        api,
        sandbox_id,
        "mkdir -p /workspace/d/sub /workspace/t && echo hi > /workspace/d/a && echo x > /workspace/f && "
        "for i in $(seq 40); do mkfifo /workspace/t/fifo-$i; done && "
        "python3 -c \"import socket; socket.socket(socket.AF_UNIX).bind('/workspace/t/sock')\"",
    )
    answer = getattr(api, method)(f"/sandboxes/{sandbox_id}{route}", timeout=30, **arguments)
    body = assert_client_error(answer)
    assert len(body["message"]) < 300, body["message"]
    # The sandbox is intact and still serves.
    assert api.get(f"/sandboxes/{sandbox_id}/files/exists", params={"path": "/workspace/f"}).json()["exists"]
