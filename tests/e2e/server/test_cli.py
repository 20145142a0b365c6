from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from tests.support.live_server import data_root, start_server, stop_server, workspace_command


def test_non_loopback_without_key_is_refused(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "WORKSPACE_API_KEY"}
    result = subprocess.run(
        [*workspace_command(), "serve", "--host", "0.0.0.0", "--port", "1", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0
    assert "without an API key" in result.stderr


def test_unreachable_data_dir_is_a_clear_startup_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [*workspace_command(), "serve", "--port", "1", "--data-dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "not searchable by other users" in result.stderr and "Traceback" not in result.stderr


def test_api_key_is_required_when_set() -> None:
    server = start_server(data_root() / "data", api_key="s3cret-key", extra=["--pool-size", "0"])
    try:
        assert httpx.get(server.url + "/healthz").status_code == 200
        denied = httpx.get(server.url + "/api/v1/sandboxes")
        assert denied.status_code == 401 and denied.json()["code"] == "UNAUTHORIZED"
        wrong = httpx.get(server.url + "/api/v1/sandboxes", headers={"Authorization": "Bearer s3cret-kez"})
        assert wrong.status_code == 401
        for headers in ({"Authorization": "Bearer s3cret-key"}, {"X-API-Key": "s3cret-key"}):
            assert httpx.get(server.url + "/api/v1/sandboxes", headers=headers).status_code == 200
        assert "listening on" in server.log() and "runtime=runc" in server.log()
    finally:
        stop_server(server)


def test_openapi_command_matches_committed_spec() -> None:
    generated = subprocess.run(
        [*workspace_command(), "openapi"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    committed = (Path(__file__).resolve().parents[3] / "spec" / "openapi.json").read_text()
    assert generated == committed, "run `make spec-update`"
