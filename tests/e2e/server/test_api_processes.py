from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from tests.support import http_api


def run(api: httpx.Client, sandbox: dict[str, Any], **body: Any) -> httpx.Response:
    return api.post(f"/sandboxes/{sandbox['id']}/processes/run", json=body)


def sse_events(lines: httpx.Response | Iterator[str]) -> list[tuple[str, dict[str, Any]]]:
    return list(http_api.sse_events(lines.iter_lines() if isinstance(lines, httpx.Response) else lines))


def test_exit_code_stdout_stderr(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    body = run(api, sandbox, command="sh", args=["-c", "echo out; echo err >&2; exit 3"]).json()
    assert (body["exit_code"], body["stdout"], body["stderr"]) == (3, "out\n", "err\n")


def test_args_env_cwd_and_user(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    body = run(
        api,
        sandbox,
        command="sh",
        args=["-c", 'echo "$GREETING $(pwd) $(id -u) $HOME"'],
        env={"GREETING": "hi"},
        cwd="/tmp",
    ).json()
    assert body["stdout"] == "hi /tmp 1000 /home/user\n"
    root = run(api, sandbox, command="id", args=["-u"], user="root").json()
    assert root["stdout"] == "0\n"


def test_stdin_is_explicit(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    assert run(api, sandbox, command="cat", stdin="fed\n").json()["stdout"] == "fed\n"
    # Without stdin the command reads /dev/null and never hangs.
    body = run(api, sandbox, command="cat", timeout=10).json()
    assert (body["exit_code"], body["stdout"]) == (0, "")


def test_command_timeout_kills_the_whole_group(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    started = time.monotonic()
    response = run(api, sandbox, command="sh", args=["-c", "sleep 30 & sleep 30"], timeout=1)
    assert response.status_code == 408
    assert response.json()["code"] == "PROCESS_TIMEOUT"
    assert time.monotonic() - started < 10
    left = run(api, sandbox, command="sh", args=["-c", "ps -eo comm | grep -c '^sleep$' || true"]).json()
    assert left["stdout"].strip() == "0"


def test_unknown_command_and_cwd(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    response = run(api, sandbox, command="definitely-not-a-command")
    assert response.status_code == 400 and response.json()["code"] == "COMMAND_NOT_FOUND"
    response = run(api, sandbox, command="true", cwd="/workspace/missing")
    assert response.status_code == 404 and response.json()["code"] == "FILE_NOT_FOUND"


def test_killed_by_signal_reports_128_plus_signal(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    assert run(api, sandbox, command="sh", args=["-c", "kill -9 $$"]).json()["exit_code"] == 137


def test_stream_events_in_order(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    body = {"command": "sh", "args": ["-c", "echo one; echo two >&2; exit 5"]}
    with api.stream("POST", f"/sandboxes/{sandbox['id']}/processes/stream", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response)
    assert events[0][0] == "start" and events[0][1]["pid"] > 0
    assert ("stdout", {"data": "one\n"}) in events and ("stderr", {"data": "two\n"}) in events
    assert events[-1] == ("exit", {"code": 5})


def test_stream_kill_by_pid(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    body = {"command": "sh", "args": ["-c", "echo ready; sleep 60"]}
    with api.stream("POST", f"/sandboxes/{sandbox['id']}/processes/stream", json=body) as response:
        lines = response.iter_lines()
        pid = None
        for line in lines:
            if line.startswith("data: ") and pid is None:
                pid = json.loads(line[6:])["pid"]
            if "ready" in line:
                break
        listed = api.get(f"/sandboxes/{sandbox['id']}/processes").json()["processes"]
        assert pid in [p["pid"] for p in listed]
        assert api.post(f"/sandboxes/{sandbox['id']}/processes/{pid}/kill", json={"signal": 9}).status_code == 204
        rest = sse_events(lines)
    assert rest[-1] == ("exit", {"code": 137})
    missing = api.post(f"/sandboxes/{sandbox['id']}/processes/99999/kill", json={})
    assert missing.status_code == 404 and missing.json()["code"] == "PROCESS_NOT_FOUND"


def test_stream_errors_before_start_are_json(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    response = api.post(f"/sandboxes/{sandbox['id']}/processes/stream", json={"command": "no-such-cmd"})
    assert response.status_code == 400 and response.json()["code"] == "COMMAND_NOT_FOUND"


def test_stream_timeout_ends_with_error_event(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    body = {"command": "sleep", "args": ["30"], "timeout": 0.5}
    with api.stream("POST", f"/sandboxes/{sandbox['id']}/processes/stream", json=body) as response:
        events = sse_events(response)
    assert events[-1][0] == "error" and events[-1][1]["code"] == "PROCESS_TIMEOUT"


def test_large_output_is_complete(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    body = run(api, sandbox, command="sh", args=["-c", "seq 1 200000"]).json()
    assert body["stdout"].count("\n") == 200000 and body["stdout"].endswith("200000\n")


def test_concurrent_runs_in_one_sandbox(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    results: list[str] = []

    def worker(n: int) -> None:
        with httpx.Client(base_url=str(api.base_url), timeout=60) as client:
            results.append(run(client, sandbox, command="echo", args=[str(n)]).json()["stdout"])

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == sorted(f"{n}\n" for n in range(10))


def test_bad_process_requests(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    for body in (
        {},
        {"command": ""},
        {"command": "true", "timeout": 0},
        {"command": "true", "user": "admin"},
        {"command": "true", "args": "notalist"},
        {"command": "true", "env": {"": "x"}},
        {"command": "a\u0000b"},
    ):
        response = api.post(f"/sandboxes/{sandbox['id']}/processes/run", json=body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["code"] == "INVALID_REQUEST"


def test_commands_still_run_when_the_user_spawner_is_killed(api: httpx.Client, sandbox: dict[str, Any]) -> None:
    # The spawner runs as the sandbox user, so sandbox code can kill it; the agent falls back.
    killed = run(api, sandbox, command="sh", args=["-c", "pkill -KILL -u 1000 -f agent.py; echo done"]).json()
    assert killed["stdout"].endswith("done\n") or killed["exit_code"] == 137
    for _ in range(3):
        body = run(api, sandbox, command="id", args=["-u"]).json()
        assert (body["exit_code"], body["stdout"]) == (0, "1000\n")
    streamed = api.post(f"/sandboxes/{sandbox['id']}/processes/stream", json={"command": "echo", "args": ["s"]})
    assert ("stdout", {"data": "s\n"}) in sse_events(streamed)


def test_memory_hog_is_oom_killed_and_the_sandbox_survives(api: httpx.Client) -> None:
    created = api.post("/sandboxes", json={"memory_mb": 64}).json()
    try:
        hog = api.post(
            f"/sandboxes/{created['id']}/processes/run",
            json={"command": "python3", "args": ["-c", "x = bytearray(256 * 1024 * 1024)"]},
        ).json()
        assert hog["exit_code"] == 137
        after = api.get(f"/sandboxes/{created['id']}").json()
        assert after["state"] == "running" and after["oom_kills"] >= 1
        alive = api.post(f"/sandboxes/{created['id']}/processes/run", json={"command": "echo", "args": ["ok"]})
        assert alive.json()["stdout"] == "ok\n"
    finally:
        api.delete(f"/sandboxes/{created['id']}", params={"force": "true"})
