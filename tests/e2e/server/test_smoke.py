from __future__ import annotations

from typing import Any

import httpx


def test_run_echo(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    response = api.post(f"/sandboxes/{sandbox['id']}/processes/run", json={"command": "echo", "args": ["hi"]})
    assert response.status_code == 200, response.text
    assert response.json()["stdout"] == "hi\n"
