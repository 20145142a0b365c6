"""Every client verb of `workspace` against a live server, as a separate process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cli import WORKSPACE, cli_env, run_cli, run_json
from tests.support.live_server import LiveServer, data_root, free_port, start_server, stop_server


@pytest.fixture
def sandbox_id(server_url: str) -> Any:
    created = run_json(server_url, "create", "--template", "workspace-test:latest")
    yield created["id"]
    run_cli(server_url, "rm", "--force", created["id"])


def test_create_ls_inspect_rm(server_url: str) -> None:
    created = run_json(
        server_url, "create", "--name", "cli-test", "-e", "GREETING=hi", "-m", "owner=cli",
        "--cpu", "0.5", "--memory", "256", "--timeout", "600",
    )  # fmt: skip
    sandbox_id = created["id"]
    assert created["state"] == "running" and created["cpu"] == 0.5 and created["memory_mb"] == 256
    assert created["env"] == {"GREETING": "hi"} and created["metadata"] == {"owner": "cli"}

    listed = run_json(server_url, "ls")
    assert sandbox_id in [item["id"] for item in listed]
    table = run_cli(server_url, "ls")
    assert table.returncode == 0
    line = next(row for row in table.stdout.decode().splitlines() if row.startswith(sandbox_id))
    assert "cli-test" in line and "running" in line and "cpu 0.5, mem 256 MiB" in line

    shown = run_json(server_url, "inspect", sandbox_id)
    assert shown["id"] == sandbox_id and shown["expires_at"] is not None
    human = run_cli(server_url, "inspect", sandbox_id).stdout.decode()
    assert "GREETING=hi" in human and "owner=cli" in human

    plain = run_cli(server_url, "create")
    assert plain.returncode == 0 and plain.stdout.decode().strip().startswith("sbx-")
    other = plain.stdout.decode().strip()

    removed = run_json(server_url, "rm", "--force", sandbox_id, other)
    assert removed == {"removed": [sandbox_id, other], "errors": []}
    gone = run_cli(server_url, "inspect", sandbox_id)
    assert gone.returncode == 1
    assert gone.stderr.decode() == f"error: sandbox {sandbox_id} not found (SANDBOX_NOT_FOUND)\n"


def test_rm_reports_each_failure_and_exits_non_zero(server_url: str, sandbox_id: str) -> None:
    result = run_cli(server_url, "rm", "sbx-doesnotexist", sandbox_id)
    assert result.returncode == 1
    assert result.stdout.decode() == sandbox_id + "\n"
    assert "sbx-doesnotexist not found" in result.stderr.decode()


def test_exec_streams_output_and_exits_with_the_commands_status(server_url: str, sandbox_id: str) -> None:
    result = run_cli(server_url, "exec", sandbox_id, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    assert run_cli(server_url, "exec", sandbox_id, "--", "true").returncode == 0
    assert run_cli(server_url, "exec", sandbox_id, "--", "false").returncode == 1
    killed = run_cli(server_url, "exec", sandbox_id, "--", "sh", "-c", "kill -9 $$")
    assert killed.returncode == 128 + 9

    missing = run_cli(server_url, "exec", sandbox_id, "--", "no-such-command")
    assert missing.returncode == 127 and b"no-such-command" in missing.stderr

    timed_out = run_cli(server_url, "exec", "--timeout", "1", sandbox_id, "--", "sleep", "30")
    assert timed_out.returncode == 124 and timed_out.stderr.startswith(b"error: ")

    script = 'echo "$A $(pwd) $(id -u)"'
    options = run_cli(server_url, "exec", "-e", "A=1", "-w", "/tmp", "-u", "root", sandbox_id, "--", "sh", "-c", script)
    assert options.stdout == b"1 /tmp 0\n"
    fed = run_cli(server_url, "exec", "-i", sandbox_id, "--", "wc", "-c", input=b"12345")
    assert fed.stdout.strip() == b"5"

    as_json = run_cli(server_url, "exec", "--json", sandbox_id, "--", "sh", "-c", "echo hi; exit 4")
    assert as_json.returncode == 4
    assert json.loads(as_json.stdout)["exit_code"] == 4 and json.loads(as_json.stdout)["stdout"] == "hi\n"


def test_exec_output_is_live(server_url: str, sandbox_id: str) -> None:
    """The first line arrives while the command is still running."""
    process = subprocess.Popen(
        [str(WORKSPACE), "exec", sandbox_id, "--", "sh", "-c", "echo first; sleep 30; echo never"],
        env=cli_env(server_url),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"first\n"
        assert process.poll() is None
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
    finally:
        process.kill()
        process.wait()
    # Leaving the stream killed the command in the sandbox.
    deadline = time.monotonic() + 10
    while run_json(server_url, "ps", sandbox_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert run_json(server_url, "ps", sandbox_id) == []


def test_exec_against_unknown_sandbox_and_unreachable_server(server_url: str) -> None:
    unknown = run_cli(server_url, "exec", "sbx-nope", "--", "true")
    assert unknown.returncode == 125
    assert unknown.stderr.decode() == "error: sandbox sbx-nope not found (SANDBOX_NOT_FOUND)\n"
    for verb in (["ls"], ["exec", "sbx-x", "--", "true"], ["template", "ls"]):
        down = run_cli(f"http://127.0.0.1:{free_port()}", *verb)
        assert down.returncode != 0
        lines = down.stderr.decode().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: server unreachable: cannot connect to"), lines


def test_bad_api_key_is_one_clear_line() -> None:
    server = start_server(data_root() / "data", api_key="right-key", extra=["--pool-size", "0"])
    try:
        wrong = run_cli(server.url, "ls", api_key="wrong-key")
        assert wrong.returncode == 1
        assert wrong.stderr.decode().startswith("error: the server refused the API key")
        assert len(wrong.stderr.decode().splitlines()) == 1
        assert run_cli(server.url, "--api-key", "right-key", "ls").returncode == 0
        assert run_json(server.url, "ls", api_key="right-key") == []
    finally:
        stop_server(server)


def test_cp_large_file_both_ways_byte_for_byte(server_url: str, sandbox_id: str, tmp_path: Path) -> None:
    source = tmp_path / "big.bin"
    with open(source, "wb") as f:
        for _ in range(48):
            f.write(os.urandom(1 << 20))
    uploaded = run_json(server_url, "cp", str(source), f"{sandbox_id}:/workspace/")
    assert uploaded["bytes"] == 48 << 20 and uploaded["destination"] == f"{sandbox_id}:/workspace/big.bin"
    remote_sum = run_cli(server_url, "exec", sandbox_id, "--", "sha256sum", "/workspace/big.bin").stdout.split()[0]
    assert remote_sum.decode() == hashlib.sha256(source.read_bytes()).hexdigest()

    back_dir = tmp_path / "back"
    back_dir.mkdir()
    result = run_cli(server_url, "cp", f"{sandbox_id}:/workspace/big.bin", str(back_dir))
    assert result.returncode == 0, result.stderr
    assert (back_dir / "big.bin").read_bytes() == source.read_bytes()
    assert [p.name for p in back_dir.iterdir()] == ["big.bin"]  # no partial file left

    piped = run_cli(server_url, "cp", "-", f"{sandbox_id}:/workspace/from-stdin.txt", input=b"piped\n")
    assert piped.returncode == 0
    assert run_cli(server_url, "cp", f"{sandbox_id}:/workspace/from-stdin.txt", "-").stdout == b"piped\n"


def test_cp_errors(server_url: str, sandbox_id: str, tmp_path: Path) -> None:
    missing = run_cli(server_url, "cp", f"{sandbox_id}:/workspace/none", str(tmp_path / "x"))
    assert missing.returncode == 1 and b"FILE_NOT_FOUND" in missing.stderr
    assert not (tmp_path / "x").exists() and list(tmp_path.iterdir()) == []
    both_local = run_cli(server_url, "cp", str(tmp_path / "a"), str(tmp_path / "b"))
    assert both_local.returncode == 2 and b"ID:PATH" in both_local.stderr
    no_local = run_cli(server_url, "cp", str(tmp_path / "absent"), f"{sandbox_id}:/workspace/")
    assert no_local.returncode == 1 and no_local.stderr.startswith(b"error: cannot read")


def test_cp_shows_a_progress_bar_on_a_terminal(server_url: str, sandbox_id: str, tmp_path: Path) -> None:
    """Under a pseudo-terminal, a large transfer draws rich's bar on stderr."""
    source = tmp_path / "big.bin"
    source.write_bytes(os.urandom(64 << 20))
    script = "import os, pty, sys; sys.exit(os.waitstatus_to_exitcode(pty.spawn(sys.argv[1:])))"
    result = subprocess.run(
        [sys.executable, "-c", script, str(WORKSPACE), "cp", str(source), f"{sandbox_id}:/workspace/big.bin"],
        env={**cli_env(server_url), "TERM": "xterm"},
        capture_output=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout
    assert b"MiB" in result.stdout and b"big.bin" in result.stdout


def test_ps_and_kill(server_url: str, sandbox_id: str) -> None:
    background = subprocess.Popen(
        [str(WORKSPACE), "exec", sandbox_id, "--", "sleep", "300"], env=cli_env(server_url), stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 20
        processes: list[dict[str, Any]] = []
        while not processes and time.monotonic() < deadline:
            processes = run_json(server_url, "ps", sandbox_id)
        assert processes and processes[0]["command"] == "sleep" and processes[0]["args"] == ["300"]
        table = run_cli(server_url, "ps", sandbox_id).stdout.decode()
        assert f"{processes[0]['pid']}\tsleep 300" in table
        killed = run_json(server_url, "kill", "--signal", "KILL", sandbox_id, str(processes[0]["pid"]))
        assert killed == {"sandbox_id": sandbox_id, "pid": processes[0]["pid"], "signal": 9}
        assert background.wait(timeout=30) == 137
    finally:
        background.kill()
        background.wait()
    unknown = run_cli(server_url, "kill", sandbox_id, "99999")
    assert unknown.returncode == 1 and b"PROCESS_NOT_FOUND" in unknown.stderr
    bad_signal = run_cli(server_url, "kill", "-s", "NOPE", sandbox_id, "1")
    assert bad_signal.returncode == 2 and b"unknown signal" in bad_signal.stderr


def test_template_ls(server_url: str) -> None:
    templates = run_json(server_url, "template", "ls")
    assert "workspace-test:latest" in [t["name"] for t in templates]
    assert "workspace-test:latest" in run_cli(server_url, "template", "ls").stdout.decode()


def test_serve_and_openapi_are_verbs_of_the_same_command() -> None:
    help_text = subprocess.run([str(WORKSPACE), "--help"], capture_output=True, text=True, env=cli_env("http://x:1"))
    for verb in ("ls", "create", "exec", "shell", "cp", "ps", "kill", "serve", "openapi"):
        assert f" {verb} " in help_text.stdout, help_text.stdout
    spec = subprocess.run([str(WORKSPACE), "openapi"], capture_output=True, text=True, check=True)
    assert json.loads(spec.stdout)["info"]["title"] == "Workspace API"


def test_client_verbs_need_none_of_the_servers_dependencies(workspace_server: LiveServer) -> None:
    """A client-only install: the verbs run with the server's packages made unimportable."""
    blocked = ["workspace_server", "fastapi", "starlette", "uvicorn", "pydantic", "prometheus_client"]
    script = (
        "import sys\n"
        f"for name in {blocked!r}: sys.modules[name] = None\n"
        "sys.argv = ['workspace', 'ls', '--json']\n"
        "from workspace_cli import main\n"
        "main()\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], env=cli_env(workspace_server.url), capture_output=True, timeout=60
    )
    assert result.returncode == 0, result.stderr.decode()
    assert isinstance(json.loads(result.stdout), list)
    assert httpx.get(workspace_server.url + "/healthz").status_code == 200


def test_lifecycle_verbs(server_url: str, sandbox_id: str) -> None:
    assert run_cli(server_url, "exec", sandbox_id, "--", "sh", "-c", "echo kept > /workspace/kept").returncode == 0
    for verb, state in (("pause", "paused"), ("resume", "running"), ("stop", "stopped"), ("start", "running")):
        shown = run_json(server_url, verb, sandbox_id)
        assert shown["state"] == state, (verb, shown)
    assert run_cli(server_url, "pause", sandbox_id).stdout.decode() == f"{sandbox_id} paused\n"
    refused = run_cli(server_url, "start", sandbox_id)
    assert refused.returncode == 1 and "INVALID_STATE_TRANSITION" in refused.stderr.decode()
    forked = run_cli(server_url, "fork", sandbox_id, "-m", "copy=yes")
    fork_id = forked.stdout.decode().strip()
    try:
        assert forked.returncode == 0 and fork_id.startswith("sbx-") and fork_id != sandbox_id
        assert run_json(server_url, "inspect", fork_id)["metadata"] == {"copy": "yes"}
        cat = run_cli(server_url, "exec", fork_id, "--", "cat", "/workspace/kept")
        assert cat.stdout.decode() == "kept\n"
    finally:
        run_cli(server_url, "rm", "--force", fork_id)
    timed = run_json(server_url, "timeout", sandbox_id, "600", "--on-timeout", "stop")
    assert (timed["timeout"], timed["on_timeout"]) == (600, "stop")
    assert run_cli(server_url, "timeout", sandbox_id, "5", "--on-timeout", "never").returncode != 0


def test_template_import_inspect_snapshot_rm(server_url: str, tmp_path: Path) -> None:
    from tests.support.images import busybox_oci_archive

    archive = busybox_oci_archive(tmp_path / "busybox.tar")
    imported = run_json(
        server_url, "template", "import", "cli-busybox:1", str(archive), "--description", "from the CLI"
    )
    assert imported["name"] == "cli-busybox:1" and imported["source"] == "imported"
    assert "cli-busybox:1" in run_cli(server_url, "template", "ls").stdout.decode()
    shown = run_cli(server_url, "template", "inspect", "cli-busybox:1").stdout.decode()
    assert "from the CLI" in shown and imported["digest"] in shown
    taken = run_cli(server_url, "template", "import", "cli-busybox:1", str(archive))
    assert taken.returncode == 1 and "TEMPLATE_EXISTS" in taken.stderr.decode()

    sandbox_id = run_cli(server_url, "create", "-t", "cli-busybox:1").stdout.decode().strip()
    try:
        assert run_cli(server_url, "exec", sandbox_id, "--", "sh", "-c", "echo snap > /workspace/s").returncode == 0
        assert run_cli(server_url, "snapshot", sandbox_id, "cli-snap:1").stdout == b"cli-snap:1\n"
    finally:
        run_cli(server_url, "rm", "--force", sandbox_id)
    copy_id = run_cli(server_url, "create", "-t", "cli-snap:1").stdout.decode().strip()
    try:
        assert run_cli(server_url, "exec", copy_id, "--", "cat", "/workspace/s").stdout == b"snap\n"
    finally:
        run_cli(server_url, "rm", "--force", copy_id)
    for name in ("cli-snap:1", "cli-busybox:1"):
        assert run_json(server_url, "template", "rm", name) == {"removed": name}
    missing = run_cli(server_url, "template", "inspect", "cli-busybox:1")
    assert missing.returncode == 1 and "TEMPLATE_NOT_FOUND" in missing.stderr.decode()
