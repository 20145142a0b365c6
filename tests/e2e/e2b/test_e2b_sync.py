"""The real `e2b` SDK (sync), unchanged, against a live Workspace server and real sandboxes."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from e2b import CommandExitException, NotFoundException, Sandbox, TimeoutException
from e2b.exceptions import AuthenticationException
from e2b.sandbox.commands.command_handle import PtySize

from tests.e2e.e2b.conftest import API_KEY
from tests.support.live_server import LiveServer


def unique(prefix: str) -> str:
    return f"/workspace/{prefix}-{uuid.uuid4().hex[:8]}"


def test_e2b_commands_run_streams_output_to_callbacks(e2b_sandbox: Sandbox) -> None:
    out: list[str] = []
    err: list[str] = []
    result = e2b_sandbox.commands.run(
        "echo hello; echo oops >&2; echo $GREETING", envs={"GREETING": "hi"}, on_stdout=out.append, on_stderr=err.append
    )
    assert result.exit_code == 0
    assert result.stdout == "hello\nhi\n"
    assert result.stderr == "oops\n"
    assert "".join(out) == "hello\nhi\n" and "".join(err) == "oops\n"


def test_e2b_commands_run_user_and_cwd(e2b_sandbox: Sandbox) -> None:
    assert e2b_sandbox.commands.run("whoami").stdout.strip() == "user"
    assert e2b_sandbox.commands.run("whoami", user="root").stdout.strip() == "root"
    assert e2b_sandbox.commands.run("pwd", cwd="/tmp").stdout.strip() == "/tmp"


def test_e2b_failing_command_raises_command_exit_exception(e2b_sandbox: Sandbox) -> None:
    with pytest.raises(CommandExitException) as caught:
        e2b_sandbox.commands.run("echo bad >&2; exit 3")
    assert caught.value.exit_code == 3
    assert caught.value.stderr == "bad\n"


def test_e2b_command_timeout_kills_and_raises_timeout(e2b_sandbox: Sandbox) -> None:
    with pytest.raises(TimeoutException):
        e2b_sandbox.commands.run("sleep 30", timeout=1)


def test_e2b_background_command_list_and_kill(e2b_sandbox: Sandbox) -> None:
    handle = e2b_sandbox.commands.run("sleep 120", background=True)
    assert handle.pid in [p.pid for p in e2b_sandbox.commands.list()]
    assert e2b_sandbox.commands.kill(handle.pid) is True
    with pytest.raises(CommandExitException):
        handle.wait()
    assert handle.pid not in [p.pid for p in e2b_sandbox.commands.list()]


def test_e2b_background_command_stdin_and_connect(e2b_sandbox: Sandbox) -> None:
    handle = e2b_sandbox.commands.run("read line; echo got:$line; sleep 1; echo done", background=True, stdin=True)
    e2b_sandbox.commands.send_stdin(handle.pid, "hello\n")
    again = e2b_sandbox.commands.connect(handle.pid)
    handle.disconnect()  # a client leaving does not kill the process (envd semantics)
    result = again.wait()
    assert result.exit_code == 0
    assert "got:hello\n" in result.stdout and result.stdout.endswith("done\n")


def test_e2b_close_stdin_ends_cat(e2b_server: LiveServer, e2b_sandbox: Sandbox) -> None:
    """SDK 2.20 has no close_stdin: the raw CloseStdin RPC, as later SDKs send it."""
    handle = e2b_sandbox.commands.run("cat", background=True, stdin=True)
    e2b_sandbox.commands.send_stdin(handle.pid, "abc")
    headers = {"X-Access-Token": e2b_sandbox._envd_access_token or "", "Content-Type": "application/json"}
    closed = httpx.post(
        e2b_server.url + "/e2b/envd/process.Process/CloseStdin", json={"process": {"pid": handle.pid}}, headers=headers
    )
    assert closed.status_code == 200, closed.text
    assert handle.wait().stdout == "abc"


def test_e2b_files_round_trip(e2b_sandbox: Sandbox) -> None:
    root = unique("files")
    assert e2b_sandbox.files.make_dir(root) is True
    assert e2b_sandbox.files.make_dir(root) is False  # already exists
    info = e2b_sandbox.files.write(f"{root}/a.txt", "alpha\n")
    assert info.path == f"{root}/a.txt"
    assert e2b_sandbox.files.read(f"{root}/a.txt") == "alpha\n"
    assert e2b_sandbox.files.read(f"{root}/a.txt", format="bytes") == bytearray(b"alpha\n")
    e2b_sandbox.files.write(f"{root}/sub/b.bin", b"\x00\xff")
    names = sorted(entry.name for entry in e2b_sandbox.files.list(root))
    assert names == ["a.txt", "sub"]
    deep = sorted(entry.path for entry in e2b_sandbox.files.list(root, depth=2))
    assert f"{root}/sub/b.bin" in deep
    assert e2b_sandbox.files.exists(f"{root}/a.txt")
    moved = e2b_sandbox.files.rename(f"{root}/a.txt", f"{root}/c.txt")
    assert moved.path == f"{root}/c.txt"
    assert not e2b_sandbox.files.exists(f"{root}/a.txt")
    assert e2b_sandbox.files.get_info(f"{root}/c.txt").size == 6
    e2b_sandbox.files.remove(root)
    assert not e2b_sandbox.files.exists(root)
    with pytest.raises(NotFoundException):
        e2b_sandbox.files.read(f"{root}/c.txt")


def test_e2b_sandbox_lifecycle_create_connect_list_timeout_kill(e2b_server: LiveServer) -> None:
    sandbox = Sandbox.create("base", metadata={"suite": "e2b-lifecycle"}, timeout=120)
    try:
        assert sandbox.is_running()
        info = sandbox.get_info()
        assert info.sandbox_id == sandbox.sandbox_id
        assert info.template_id == "default"
        assert info.metadata == {"suite": "e2b-lifecycle"}
        listed = Sandbox.list(query=None).next_items()
        assert sandbox.sandbox_id in [s.sandbox_id for s in listed]
        sandbox.set_timeout(300)
        assert Sandbox.get_info(sandbox.sandbox_id).end_at > info.end_at
        again = Sandbox.connect(sandbox.sandbox_id)
        assert again.commands.run("echo again").stdout == "again\n"
    finally:
        assert sandbox.kill() is True
    assert Sandbox.kill(sandbox.sandbox_id) is False
    with pytest.raises(NotFoundException):
        Sandbox.connect(sandbox.sandbox_id)


def test_e2b_list_pages_with_next_token(e2b_server: LiveServer, e2b_sandbox: Sandbox) -> None:
    extra = Sandbox.create(timeout=120)
    try:
        paginator = Sandbox.list(limit=1)
        seen: list[str] = []
        while paginator.has_next:
            seen += [s.sandbox_id for s in paginator.next_items()]
        assert {extra.sandbox_id, e2b_sandbox.sandbox_id} <= set(seen)
        assert len(seen) == len(set(seen))
    finally:
        extra.kill()


def test_e2b_wrong_api_key_and_unknown_sandbox(e2b_server: LiveServer) -> None:
    with pytest.raises(AuthenticationException):
        Sandbox.create(api_key="wrong")
    with pytest.raises(NotFoundException):
        Sandbox.connect("sbx-doesnotexist")


def test_e2b_envd_requires_the_sandbox_access_token(e2b_server: LiveServer, e2b_sandbox: Sandbox) -> None:
    url = e2b_server.url + "/e2b/envd/filesystem.Filesystem/Stat"
    headers = {"E2b-Sandbox-Id": e2b_sandbox.sandbox_id, "Content-Type": "application/json"}
    forged = httpx.post(url, json={"path": "/workspace"}, headers={**headers, "X-Access-Token": "nope"})
    assert forged.status_code == 401 and forged.json()["code"] == "unauthenticated"
    keyed = httpx.post(url, json={"path": "/workspace"}, headers={**headers, "X-API-KEY": API_KEY})
    assert keyed.status_code == 401  # the API key is not a sandbox's access token


def fetch_host(server: LiveServer, host: str) -> httpx.Response:
    """GET http://{host}/ at the server's address: `*.localhost` names need no DNS, but
    Python's resolver does not know them."""
    return httpx.get(server.url + "/", headers={"Host": host}, timeout=30)


SERVE_HOSTNAME = (
    "mkdir -p /tmp/site && hostname > /tmp/site/index.html && cd /tmp/site && exec python3 -m http.server {port}"
)


def wait_served(server: LiveServer, host: str) -> httpx.Response:
    deadline = time.monotonic() + 20
    while True:
        response = fetch_host(server, host)
        if response.status_code != 502 or time.monotonic() > deadline:  # 502: nothing listens yet
            return response
        time.sleep(0.2)


def test_e2b_get_host_reaches_a_server_in_the_sandbox_without_a_token(
    e2b_server: LiveServer, e2b_sandbox: Sandbox
) -> None:
    e2b_sandbox.commands.run(SERVE_HOSTNAME.format(port=8123), background=True)
    host = e2b_sandbox.get_host(8123)
    assert host == f"8123-{e2b_sandbox.sandbox_id}.localhost:{e2b_server.url.rsplit(':', 1)[1]}"
    response = wait_served(e2b_server, host)
    assert response.status_code == 200, response.text
    assert response.text.strip() == e2b_sandbox.commands.run("hostname").stdout.strip()


def test_e2b_private_traffic_needs_a_workspace_token_and_egress_rules_are_refused(
    e2b_server: LiveServer,
) -> None:
    private = Sandbox.create(timeout=120, network={"allow_public_traffic": False})
    try:
        private.commands.run(SERVE_HOSTNAME.format(port=8124), background=True)
        response = wait_served(e2b_server, private.get_host(8124))
        assert response.status_code == 401, response.text  # the port is private: a preview token is needed
    finally:
        private.kill()
    refused = httpx.post(
        e2b_server.url + "/e2b/sandboxes",
        json={"templateID": "base", "network": {"denyOut": ["0.0.0.0/0"]}},
        headers={"X-API-KEY": API_KEY},
        timeout=60,
    )
    assert refused.status_code == 400 and "denyOut" in refused.json()["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("POST", "/e2b/sandboxes", b"{", 400),
        ("POST", "/e2b/sandboxes", b'{"templateID": ""}', 400),
        ("POST", "/e2b/sandboxes", b'{"templateID": "no-such-template"}', 404),
        ("POST", "/e2b/sandboxes", b'{"templateID": "base", "timeout": -5}', 400),
        ("GET", "/e2b/v2/sandboxes?limit=0", b"", 400),
        ("GET", "/e2b/v2/sandboxes?nextToken=zzz", b"", 400),
        ("GET", "/e2b/v2/sandboxes?state=exploded", b"", 400),
        ("POST", "/e2b/sandboxes/sbx-nope/timeout", b'{"timeout": 10}', 404),
        ("POST", "/e2b/sandboxes/sbx-nope/timeout", b"[]", 400),
        ("DELETE", "/e2b/sandboxes/sbx-nope", b"", 404),
        ("GET", "/e2b/sandboxes/sbx-nope", b"", 404),
    ],
)
def test_e2b_control_plane_bad_input_gets_e2b_errors(
    e2b_server: LiveServer, method: str, path: str, body: bytes, status: int
) -> None:
    response = httpx.request(method, e2b_server.url + path, content=body, headers={"X-API-KEY": API_KEY}, timeout=60)
    assert response.status_code == status, response.text
    assert response.json()["code"] == status and response.json()["message"]


@pytest.mark.parametrize(
    ("rpc", "body", "status", "code"),
    [
        ("filesystem.Filesystem/Stat", b"{", 400, "invalid_argument"),
        ("filesystem.Filesystem/Stat", b'{"path": "/nope/nope"}', 404, "not_found"),
        ("filesystem.Filesystem/ListDir", b'{"path": "/workspace", "depth": -1}', 400, "invalid_argument"),
        ("filesystem.Filesystem/Move", b'{"source": "/workspace"}', 400, "invalid_argument"),
        ("process.Process/SendSignal", b'{"process": {"pid": 1}, "signal": "SIGNAL_WHAT"}', 400, "invalid_argument"),
        ("process.Process/Start", b'{"process": {"cmd": "true"}}', 400, "invalid_argument"),  # not enveloped
        ("process.Process/Nope", b"{}", 501, "unimplemented"),
        ("nothing.Here/Stat", b"{}", 501, "unimplemented"),
    ],
)
def test_e2b_envd_bad_input_gets_connect_errors(
    e2b_server: LiveServer, e2b_sandbox: Sandbox, rpc: str, body: bytes, status: int, code: str
) -> None:
    headers = {
        "E2b-Sandbox-Id": e2b_sandbox.sandbox_id,
        "X-Access-Token": e2b_sandbox._envd_access_token or "",
        "Content-Type": "application/json",
    }
    response = httpx.post(f"{e2b_server.url}/e2b/envd/{rpc}", content=body, headers=headers, timeout=60)
    assert response.status_code == status, response.text
    assert response.json()["code"] == code


def test_e2b_pty_create_input_resize_and_exit(e2b_sandbox: Sandbox) -> None:
    terminal = e2b_sandbox.pty.create(PtySize(rows=24, cols=80))
    e2b_sandbox.pty.resize(terminal.pid, PtySize(rows=30, cols=100))
    e2b_sandbox.pty.send_stdin(terminal.pid, b"stty size; echo pty-$((6*7)); exit 5\n")
    output = bytearray()
    with pytest.raises(CommandExitException) as caught:
        terminal.wait(on_pty=output.extend)
    assert caught.value.exit_code == 5
    assert b"30 100" in output and b"pty-42" in output


def test_e2b_watch_dir_reports_changes(e2b_sandbox: Sandbox) -> None:
    root = unique("watched")
    e2b_sandbox.files.make_dir(root)
    handle = e2b_sandbox.files.watch_dir(root)
    try:
        e2b_sandbox.files.write(f"{root}/new.txt", "x")
        e2b_sandbox.commands.run(f"echo more >> {root}/new.txt")
        seen: set[tuple[str, str]] = set()
        deadline = time.monotonic() + 30
        while ("new.txt", "write") not in seen and time.monotonic() < deadline:
            seen |= {(event.name, event.type.value) for event in handle.get_new_events()}
            time.sleep(0.1)
        assert ("new.txt", "create") in seen and ("new.txt", "write") in seen
    finally:
        handle.stop()
    with pytest.raises(Exception, match="stopped"):
        handle.get_new_events()


def test_e2b_server_logged_no_unhandled_error(e2b_server: LiveServer) -> None:
    """Runs last in the module: nothing above made the server log a traceback (a 500)."""
    assert "Traceback" not in e2b_server.log()
