"""Lifecycle end to end over HTTP: pause/resume, stop/start, fork, timeouts, and the state
machine's answers (repeats say changed=false, invalid transitions a clear 409)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.lifecycle import (
    BUSY,
    counter_lines,
    cpu_seconds,
    digest,
    http_shell,
    make_tree,
    sandbox_cgroup,
    start_counter,
)
from tests.support.live_server import LiveServer


def post(api: httpx.Client, sandbox_id: str, operation: str, **kwargs: Any) -> dict[str, Any]:
    response = api.post(f"/sandboxes/{sandbox_id}/{operation}", **kwargs)
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def state_of(api: httpx.Client, sandbox_id: str) -> str:
    return str(api.get(f"/sandboxes/{sandbox_id}").json()["state"])


def wait_state(api: httpx.Client, sandbox_id: str, wanted: str, timeout: float) -> float:
    """Seconds until the sandbox reached `wanted` (404 counts as "gone")."""
    began = time.monotonic()
    while True:
        response = api.get(f"/sandboxes/{sandbox_id}")
        state = "gone" if response.status_code == 404 else response.json()["state"]
        if state == wanted:
            return time.monotonic() - began
        assert time.monotonic() - began < timeout, f"still {state} after {timeout} s, wanted {wanted}"
        time.sleep(0.1)


def without_counter(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if "counter.log" not in line)


@pytest.fixture
def make(api: httpx.Client) -> Iterator[Any]:
    """Create sandboxes with a body; all force-deleted afterwards."""
    made: list[str] = []

    def create(**body: Any) -> dict[str, Any]:
        response = api.post("/sandboxes", json=body)
        assert response.status_code == 201, response.text
        made.append(response.json()["id"])
        return dict(response.json())

    yield create
    for sandbox_id in made:
        api.delete(f"/sandboxes/{sandbox_id}", params={"force": "true"})


def test_pause_freezes_processes_and_resume_continues_them(
    api: httpx.Client, sandbox: dict[str, Any], workspace_server: LiveServer
) -> None:
    sid = sandbox["id"]
    sh = http_shell(api, sid)
    counter = start_counter(sh)
    busy = int(sh(BUSY).strip())
    time.sleep(0.5)
    paused = post(api, sid, "pause")
    assert (paused["state"], paused["changed"]) == ("paused", True)

    # Frozen: no output, no CPU (the busy loop would burn a whole core).
    # (No command here: one would resume the sandbox.)
    read = api.get(f"/sandboxes/{sid}/files", params={"path": "/workspace/counter.log"})
    cpu_before = cpu_seconds(workspace_server.process.pid, sid)
    time.sleep(1.0)
    cpu_after = cpu_seconds(workspace_server.process.pid, sid)
    again = api.get(f"/sandboxes/{sid}/files", params={"path": "/workspace/counter.log"})
    assert read.status_code == 200 and read.content == again.content, "output grew while paused"
    assert cpu_after - cpu_before < 0.05, f"a paused sandbox used {cpu_after - cpu_before:.3f} s of CPU in 1 s"

    # The agent still serves files and the process list.
    assert (
        api.put(f"/sandboxes/{sid}/files", params={"path": "/workspace/while-paused"}, content=b"x").status_code == 200
    )
    assert api.get(f"/sandboxes/{sid}/processes").status_code == 200
    assert state_of(api, sid) == "paused"

    resumed = post(api, sid, "resume")
    assert (resumed["state"], resumed["changed"]) == ("running", True)
    time.sleep(0.5)
    lines = counter_lines(sh)
    assert len(lines) > len(read.content.split()), "the counter did not continue after resume"
    assert lines == list(range(len(lines))), "the counter restarted instead of continuing"
    assert sh(f"kill -0 {counter} && kill -0 {busy} && echo alive").strip() == "alive"  # same pids
    # The busy loop runs again (on a loaded machine it may get little of a core: wait for it).
    deadline = time.monotonic() + 10
    while cpu_seconds(workspace_server.process.pid, sid) - cpu_after < 0.1:
        assert time.monotonic() < deadline, "the busy loop did not run again after resume"
        time.sleep(0.1)


def test_repeats_are_harmless_and_say_so(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    sid = sandbox["id"]
    assert post(api, sid, "resume")["changed"] is False  # running already
    assert post(api, sid, "start")["changed"] is False
    assert post(api, sid, "pause")["changed"] is True
    again = post(api, sid, "pause")
    assert (again["state"], again["changed"]) == ("paused", False)
    assert post(api, sid, "stop", params={"force": "true"})["changed"] is True
    again = post(api, sid, "stop")
    assert (again["state"], again["changed"]) == ("stopped", False)
    assert post(api, sid, "start")["changed"] is True
    assert post(api, sid, "start")["changed"] is False


@pytest.mark.parametrize(
    ("setup", "operation", "state"),
    [
        ("stop", "resume", "stopped"),
        ("stop", "pause", "stopped"),
        ("pause", "start", "paused"),
    ],
)
def test_invalid_transitions_answer_409_with_the_state(
    api: httpx.Client, sandbox: dict[str, Any], setup: str, operation: str, state: str
) -> None:
    sid = sandbox["id"]
    post(api, sid, setup, params={"force": "true"} if setup == "stop" else {})
    response = api.post(f"/sandboxes/{sid}/{operation}")
    assert response.status_code == 409, response.text
    error = response.json()
    assert error["code"] == "INVALID_STATE_TRANSITION"
    assert error["details"] == {"sandbox_id": sid, "operation": operation, "state": state}
    assert state_of(api, sid) == state


def test_a_stopped_sandbox_refuses_commands_and_files(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    sid = sandbox["id"]
    post(api, sid, "stop", params={"force": "true"})
    run = api.post(f"/sandboxes/{sid}/processes/run", json={"command": "true"})
    assert run.status_code == 409 and run.json()["code"] == "SANDBOX_NOT_RUNNING", run.text
    read = api.get(f"/sandboxes/{sid}/files", params={"path": "/workspace"})
    assert read.status_code == 409 and read.json()["code"] == "SANDBOX_NOT_RUNNING", read.text
    assert api.post(f"/sandboxes/{sid}/nope").status_code == 404


def test_commands_auto_resume_a_paused_sandbox(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    sid = sandbox["id"]
    assert sandbox["auto_resume"] is True
    post(api, sid, "pause")
    run = api.post(f"/sandboxes/{sid}/processes/run", json={"command": "echo", "args": ["hi"]})
    assert run.status_code == 200 and run.json()["stdout"] == "hi\n", run.text
    assert state_of(api, sid) == "running"


def test_without_auto_resume_a_paused_sandbox_answers_sandbox_paused(
    api: httpx.Client, make: Any, server_url: str
) -> None:
    sid = make(auto_resume=False)["id"]
    post(api, sid, "pause")
    run = api.post(f"/sandboxes/{sid}/processes/run", json={"command": "true"})
    assert run.status_code == 409, run.text
    assert run.json()["code"] == "SANDBOX_PAUSED" and run.json()["details"]["sandbox_id"] == sid
    stream = api.post(f"/sandboxes/{sid}/processes/stream", json={"command": "true"})
    assert stream.status_code == 409 and stream.json()["code"] == "SANDBOX_PAUSED"
    from websockets.sync.client import connect

    ws_url = server_url.replace("http://", "ws://") + f"/api/v1/sandboxes/{sid}/pty"
    with connect(ws_url) as socket:
        frame = socket.recv(timeout=10)
    assert '"SANDBOX_PAUSED"' in str(frame)
    assert state_of(api, sid) == "paused"
    assert api.get(f"/sandboxes/{sid}/files/list", params={"path": "/workspace"}).status_code == 200


def test_stop_and_start_twice_keep_files_and_settings(
    api: httpx.Client, make: Any, workspace_server: LiveServer
) -> None:
    created = make(env={"GREETING": "hi"}, metadata={"team": "a"}, name="keeper", memory_mb=256, cpu=0.5)
    sid = created["id"]
    sh = http_shell(api, sid)
    make_tree(sh)
    original = digest(sh)
    start_counter(sh)
    for _ in range(2):
        stopped = post(api, sid, "stop")
        assert (stopped["state"], stopped["changed"]) == ("stopped", True)
        # Memory freed: no cgroup is left, so no process and no page is charged.
        for controller in ("memory", "cpu", "pids", "freezer"):
            assert not sandbox_cgroup(workspace_server.process.pid, controller, sid).exists()
        started = post(api, sid, "start")
        assert (started["state"], started["changed"]) == ("running", True)
        for key in ("id", "template", "name", "env", "metadata", "cpu", "memory_mb", "pids", "disk_mb", "network"):
            assert started[key] == created[key], key
        counter = api.get(f"/sandboxes/{sid}/files", params={"path": "/workspace/counter.log"}).content
        sh("rm /workspace/counter.log")
        assert digest(sh) == original
        sh(f"printf '%s' '{counter.decode()}' > /workspace/counter.log")  # put it back as it was
        assert api.get(f"/sandboxes/{sid}/processes").json()["processes"] == []  # processes are not kept
        assert sh("echo $GREETING").strip() == "hi"


def test_fork_copies_files_into_a_new_uid_range_and_overrides_settings(
    api: httpx.Client, make: Any, workspace_server: LiveServer
) -> None:
    source = make(env={"A": "1"}, metadata={"who": "source"}, memory_mb=256)
    sid = source["id"]
    sh = http_shell(api, sid)
    make_tree(sh)
    start_counter(sh)
    original = digest(sh)
    response = api.post(f"/sandboxes/{sid}/fork", json={"metadata": {"who": "fork"}})
    assert response.status_code == 201, response.text
    fork = response.json()
    api_fork_id = fork["id"]
    try:
        assert fork["id"] != sid and fork["state"] == "running"
        assert fork["metadata"] == {"who": "fork"}
        assert (fork["env"], fork["memory_mb"], fork["template"]) == (source["env"], 256, source["template"])
        fork_sh = http_shell(api, fork["id"])
        copied = digest(fork_sh)
        # The counter kept running in the source during the fork: compare without it.
        assert without_counter(copied) == without_counter(original)
        # Its own uid range on the host: the data dir's bundles say which.
        data = workspace_server.data_dir / "sandboxes"
        assert (data / sid / "rw" / "workspace").stat().st_uid != (data / fork["id"] / "rw" / "workspace").stat().st_uid
        # Owners map right inside: the user can write its files, root's file is root's.
        http_shell(api, fork["id"], user="user")("echo more >> /workspace/src/user-owned")
        assert fork_sh("stat -c %U:%u /root/secret/key /workspace/src/suid").split() == ["root:0", "root:0"]
        assert fork_sh("stat -c %a /workspace/src/suid").strip() == "4755"  # chown kept the set-uid bit
        assert api.get(f"/sandboxes/{fork['id']}/processes").json()["processes"] == []  # not copied
        # Independent: a change in one is not in the other.
        fork_sh("echo fork-only > /workspace/fork-only")
        assert "fork-only" not in sh("ls /workspace")
        assert state_of(api, sid) == "running"
        assert len(counter_lines(sh)) > 0
    finally:
        api.delete(f"/sandboxes/{api_fork_id}", params={"force": "true"})


def test_fork_of_a_paused_and_of_a_stopped_sandbox(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    sid = sandbox["id"]
    sh = http_shell(api, sid)
    sh("echo kept > /workspace/kept")
    for operation in ("pause", "stop"):
        post(api, sid, operation)
        fork = post(api, sid, "fork")
        try:
            assert state_of(api, sid) == ("paused" if operation == "pause" else "stopped")
            assert http_shell(api, fork["id"])("cat /workspace/kept") == "kept\n"
        finally:
            api.delete(f"/sandboxes/{fork['id']}", params={"force": "true"})


def test_fork_overrides_are_validated(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    response = api.post(f"/sandboxes/{sandbox['id']}/fork", json={"disk_mb": 64})
    assert response.status_code == 400 and response.json()["code"] == "INVALID_REQUEST"
    response = api.post(f"/sandboxes/{sandbox['id']}/fork", json={"memory_mb": 1})
    assert response.status_code == 400 and response.json()["code"] == "INVALID_REQUEST"
    assert api.post("/sandboxes/sbx-nope/fork").status_code == 404


def test_deleting_a_paused_or_stopped_sandbox_works(api: httpx.Client, make: Any, workspace_server: LiveServer) -> None:
    for operation in ("pause", "stop"):
        sid = make()["id"]
        start_counter(http_shell(api, sid))
        post(api, sid, operation)
        assert api.delete(f"/sandboxes/{sid}").status_code == 204
        assert api.get(f"/sandboxes/{sid}").status_code == 404
        assert not (workspace_server.data_dir / "sandboxes" / sid).exists()
        assert not sandbox_cgroup(workspace_server.process.pid, "freezer", sid).exists()


@pytest.mark.parametrize(("on_timeout", "final"), [("delete", "gone"), ("stop", "stopped"), ("pause", "paused")])
def test_timeout_applies_on_timeout(api: httpx.Client, make: Any, on_timeout: str, final: str) -> None:
    created = make(timeout=1, on_timeout=on_timeout)
    sid = created["id"]
    http_shell(api, sid)("echo kept > /workspace/kept")
    wait_state(api, sid, final, timeout=10)
    if final == "gone":
        return
    record = api.get(f"/sandboxes/{sid}").json()
    assert record["expires_at"] is None  # the clock stops while it is not running
    post(api, sid, "start" if final == "stopped" else "resume")
    assert http_shell(api, sid)("cat /workspace/kept") == "kept\n"
    assert api.get(f"/sandboxes/{sid}").json()["expires_at"] is not None  # counting again


def test_set_timeout_extends_and_shortens(api: httpx.Client, make: Any) -> None:
    sid = make(timeout=2)["id"]
    extended = api.post(f"/sandboxes/{sid}/timeout", json={"timeout": 600})
    assert extended.status_code == 200 and extended.json()["timeout"] == 600, extended.text
    time.sleep(2.5)
    assert state_of(api, sid) == "running"
    shortened = api.post(f"/sandboxes/{sid}/timeout", json={"timeout": 1, "on_timeout": "stop"})
    assert shortened.json()["on_timeout"] == "stop"
    wait_state(api, sid, "stopped", timeout=10)
    bad = api.post(f"/sandboxes/{sid}/timeout", json={"timeout": 0})
    assert bad.status_code == 400 and bad.json()["code"] == "INVALID_REQUEST"


def test_idle_timeout_fires_only_without_activity(api: httpx.Client, make: Any) -> None:
    sid = make(idle_timeout=2, on_timeout="pause")["id"]
    sh = http_shell(api, sid)
    # A busy background process is activity, although no client talks to the sandbox.
    busy = int(sh(BUSY).strip())
    time.sleep(4.0)
    assert state_of(api, sid) == "running", "a busy sandbox was taken for idle"
    sh(f"kill {busy}")
    waited = wait_state(api, sid, "paused", timeout=10)
    assert waited >= 1.5, f"paused {waited:.1f} s after the last activity, idle_timeout is 2 s"


def test_idle_timeout_counts_api_calls_as_activity(api: httpx.Client, make: Any) -> None:
    sid = make(idle_timeout=2, on_timeout="stop")["id"]
    for _ in range(8):  # 4 s of calls, every 0.5 s
        assert api.get(f"/sandboxes/{sid}/files/exists", params={"path": "/workspace"}).status_code == 200
        time.sleep(0.5)
    assert state_of(api, sid) == "running"
    wait_state(api, sid, "stopped", timeout=10)


def test_racing_operations_end_consistent(api: httpx.Client, sandbox: dict[str, Any], server_url: str) -> None:
    sid = sandbox["id"]
    http_shell(api, sid)("echo kept > /workspace/kept")
    errors: list[str] = []

    def worker(operations: list[str]) -> None:
        with httpx.Client(base_url=server_url + "/api/v1", timeout=60) as client:
            for operation in operations:
                response = client.post(
                    f"/sandboxes/{sid}/{operation}", params={"force": "true"} if operation == "stop" else {}
                )
                if response.status_code != 200 and response.json().get("code") != "INVALID_STATE_TRANSITION":
                    errors.append(f"{operation}: {response.status_code} {response.text}")

    plans = [
        ["pause", "stop", "start", "resume"],
        ["stop", "start", "pause", "resume"],
        ["start", "pause", "stop", "start"],
    ]
    threads = [threading.Thread(target=worker, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    state = state_of(api, sid)
    assert state in ("running", "paused", "stopped")
    if state == "stopped":
        post(api, sid, "start")
    # Whatever it ended as, it is what it says: usable after a start/resume, files intact.
    assert http_shell(api, sid)("cat /workspace/kept") == "kept\n"
    assert state_of(api, sid) == "running"


def test_idle_timeout_counts_followers_and_pty_traffic(api: httpx.Client, make: Any, server_url: str) -> None:
    from websockets.sync.client import connect

    sid = make(idle_timeout=2, on_timeout="pause")["id"]
    # A client following a quiet process (no output, no CPU) keeps the sandbox active.
    with api.stream("POST", f"/sandboxes/{sid}/processes/stream", json={"command": "sleep", "args": ["4"]}) as response:
        assert response.status_code == 200
        for _ in response.iter_lines():
            pass  # ends when sleep exits, 4 s later
    assert state_of(api, sid) == "running", "a followed process was taken for idle"
    # PTY keystrokes and their echo are activity too.
    ws_url = server_url.replace("http://", "ws://") + f"/api/v1/sandboxes/{sid}/pty?shell=/bin/sh"
    with connect(ws_url) as socket:
        socket.recv(timeout=10)  # ready
        for _ in range(8):  # 4 s of typing
            socket.send(b"\n")
            time.sleep(0.5)
        assert state_of(api, sid) == "running", "PTY traffic was taken for idle"
    wait_state(api, sid, "paused", timeout=10)
