"""`workspace template bootstrap debian:bookworm`: mmdebstrap from this machine's Debian
mirror, imported as a template, and a sandbox of it. Slow (minutes: it downloads and
unpacks a minimal Debian), so it runs once per session, in this module alone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.live_server import LiveServer

pytestmark = pytest.mark.skipif(shutil.which("mmdebstrap") is None, reason="mmdebstrap is not installed")
WORKSPACE = Path(sys.executable).with_name("workspace")


@pytest.mark.timeout(1800)
def test_bootstrap_debian_then_a_sandbox_of_it(workspace_server: LiveServer, api: httpx.Client) -> None:
    result = subprocess.run(
        [
            str(WORKSPACE),
            "--url",
            workspace_server.url,
            "template",
            "bootstrap",
            "debian:bookworm",
            "--replace",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "WORKSPACE_API_KEY": ""},
        check=False,
    )
    assert result.returncode == 0, result.stderr
    template = json.loads(result.stdout)
    assert template["name"] == "debian:bookworm"
    assert "mmdebstrap minbase bookworm" in template["description"]
    created = api.post("/sandboxes", json={"template": "debian:bookworm"}).json()
    try:

        def run(*argv: str, user: str = "user") -> dict[str, object]:
            response = api.post(
                f"/sandboxes/{created['id']}/processes/run",
                json={"command": argv[0], "args": list(argv[1:]), "user": user},
            )
            assert response.status_code == 200, response.text
            answer: dict[str, object] = response.json()
            return answer

        assert str(run("cat", "/etc/debian_version")["stdout"]).startswith("12.")
        assert (
            run("bash", "-c", "id -un; echo $HOME; test -d /workspace && echo ws")["stdout"] == "user\n/home/user\nws\n"
        )
        assert run("dpkg-query", "-W", "apt", user="root")["exit_code"] == 0
        assert run("sh", "-c", "command -v python3 || echo none")["stdout"] == "none\n"  # the image's own: none
    finally:
        api.delete(f"/sandboxes/{created['id']}", params={"force": "true"})
    assert api.delete("/templates/debian:bookworm").status_code == 204
