"""Containerfile builds over the API, on the no-Python busybox image: every supported
instruction seen from a sandbox of the result, the step cache, failures, the time limit,
cancellation, refusals before any step runs, and the log re-read from an offset."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import signal
import tarfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.builds import build, context_tar, import_busybox, sse_events, start_build, wait_build
from tests.support.live_server import LiveServer, data_root, start_server, stop_server

CONTAINERFILE = """\
FROM {base}
ARG GREETING=hello
ARG FLAVOUR
ENV APP_HOME=/opt/app MODE="two words"
LABEL org.opencontainers.image.description="built in a test" team=tools
WORKDIR $APP_HOME
COPY app.sh data/ ./
RUN echo "$GREETING $FLAVOUR" > greeting.txt && echo "proxy=$http_proxy" > /opt/proxy.txt \\
 && chmod 644 greeting.txt
COPY --chown=user:user notes.txt /home/user/notes.txt
USER user
RUN ["/bin/sh", "-c", "id -u > /home/user/who.txt"]
ADD bundle.tar.gz /opt/bundle/
"""


@pytest.fixture(scope="module")
def api_module(workspace_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=workspace_server.url + "/api/v1", timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def base(api_module: httpx.Client, tmp_path_factory: pytest.TempPathFactory) -> str:
    return import_busybox(api_module, tmp_path_factory.mktemp("images") / "busybox.tar")


def files(base: str, notes: str = "first notes\n") -> bytes:
    return context_tar(
        {
            "Containerfile": CONTAINERFILE.format(base=base),
            "app.sh": "#!/bin/sh\necho app running\n",
            "data/one.txt": "one\n",
            "notes.txt": notes,
            "bundle.tar.gz": bundle(),
        }
    )


def bundle() -> bytes:
    """A gzipped tar in the context: ADD unpacks it, its members' owners kept."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        info = tarfile.TarInfo("lib/tool.txt")
        data = b"unpacked by ADD\n"
        info.size, info.uid, info.gid, info.mtime = len(data), 1000, 1000, 1_700_000_000
        archive.addfile(info, io.BytesIO(data))
    return gzip.compress(out.getvalue(), mtime=0)  # the same bytes each time: a cache hit


def run(api: httpx.Client, sandbox_id: str, command: str, **fields: Any) -> dict[str, Any]:
    response = api.post(f"/sandboxes/{sandbox_id}/processes/run", json={"command": command, **fields})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


@pytest.fixture(scope="module")
def built(api_module: httpx.Client, base: str) -> dict[str, Any]:
    record = build(
        api_module, files(base), "test/built:1", build_arg=["FLAVOUR=vanilla"], env=["http_proxy=http://proxy:3128"]
    )
    assert record["state"] == "ready", record
    return record


def test_build_applies_every_instruction(api: httpx.Client, built: dict[str, Any]) -> None:
    kinds = [(s["kind"], s["state"], s["cached"]) for s in built["steps"]]
    assert [k for k, _, _ in kinds] == ["config"] * 5 + ["copy", "run", "copy", "config", "run", "copy"]
    assert all(state == "done" for _, state, _ in kinds)
    assert [s["exit_code"] for s in built["steps"] if s["kind"] == "run"] == [0, 0]
    template = api.get("/templates/test/built:1").json()
    assert template["source"] == "built"
    assert template["env"]["APP_HOME"] == "/opt/app" and template["env"]["MODE"] == "two words"
    assert "http_proxy" not in template["env"] and "GREETING" not in template["env"]
    assert template["working_dir"] == "/opt/app" and template["user"] == "user"
    assert template["labels"] == {"org.opencontainers.image.description": "built in a test", "team": "tools"}
    assert template["description"] == "built in a test"
    assert len(template["layers"]) == 1 + 5  # busybox, then one per COPY, ADD and RUN
    assert template["digest"] == built["digest"]

    created = api.post("/sandboxes", json={"template": "test/built:1"}).json()
    try:
        sandbox_id = created["id"]
        listing = run(api, sandbox_id, "/bin/sh", args=["-c", "ls -ln /opt/app /opt/app/app.sh; cat /opt/app/*.txt"])
        assert listing["exit_code"] == 0, listing
        assert "-rwxr-xr-x    1 0        0" in listing["stdout"]  # app.sh: mode kept, root's
        assert "hello vanilla" in listing["stdout"]  # ARG default and --build-arg
        assert "one" in listing["stdout"]  # a directory's contents, copied into WORKDIR
        assert run(api, sandbox_id, "pwd")["stdout"] == "/opt/app\n"  # WORKDIR is the default cwd
        assert run(api, sandbox_id, "/opt/app/app.sh")["stdout"] == "app running\n"
        # Build-time env reached the RUN step and nothing else.
        assert run(api, sandbox_id, "cat", args=["/opt/proxy.txt"])["stdout"] == "proxy=http://proxy:3128\n"
        assert "http_proxy" not in run(api, sandbox_id, "env")["stdout"]
        notes = run(api, sandbox_id, "stat", args=["-c", "%u:%g %n", "/home/user/notes.txt"])
        assert notes["stdout"] == "1000:1000 /home/user/notes.txt\n"  # --chown by name
        assert run(api, sandbox_id, "cat", args=["/home/user/who.txt"])["stdout"] == "1000\n"  # USER user
        added = run(api, sandbox_id, "stat", args=["-c", "%u %n", "/opt/bundle/lib/tool.txt"])
        assert added["stdout"] == "1000 /opt/bundle/lib/tool.txt\n"  # ADD unpacked the archive, owners kept
        assert run(api, sandbox_id, "cat", args=["/opt/bundle/lib/tool.txt"])["stdout"] == "unpacked by ADD\n"
    finally:
        api.delete(f"/sandboxes/{created['id']}", params={"force": "true"})


def test_unchanged_rebuild_is_all_cache_hits(api: httpx.Client, base: str, built: dict[str, Any]) -> None:
    again = build(api, files(base), "test/built:2", build_arg=["FLAVOUR=vanilla"], env=["http_proxy=http://proxy:3128"])
    assert again["state"] == "ready", again
    assert [s["cached"] for s in again["steps"] if s["kind"] != "config"] == [True] * 5
    assert again["digest"] == built["digest"]
    # No step sandbox was made: none is left either.
    building = [s for s in api.get("/sandboxes").json()["sandboxes"] if "workspace.build" in s["metadata"]]
    assert building == []


def test_changed_context_file_runs_from_that_step(api: httpx.Client, base: str, built: dict[str, Any]) -> None:
    changed = build(
        api,
        files(base, notes="other notes\n"),
        "test/built:3",
        build_arg=["FLAVOUR=vanilla"],
        env=["http_proxy=http://proxy:3128"],
    )
    assert changed["state"] == "ready", changed
    assert [s["cached"] for s in changed["steps"] if s["kind"] != "config"] == [True, True, False, False, False]


def test_failing_run_keeps_step_exit_code_and_log(api: httpx.Client, base: str) -> None:
    context = context_tar({"Containerfile": f"FROM {base}\nRUN echo before\nRUN echo failing-now >&2; exit 3\n"})
    failed = build(api, context, "test/failing:1")
    assert failed["state"] == "error"
    error = failed["error"]
    assert error["code"] == "BUILD_FAILED" and error["exit_code"] == 3
    assert error["step"] == 1 and error["line"] == 3
    assert failed["steps"][1]["state"] == "error" and failed["steps"][1]["exit_code"] == 3
    log = api.get(f"/builds/{failed['id']}/logs", params={"follow": "false"}).text
    assert "failing-now" in log
    assert api.get("/templates/test/failing:1").status_code == 404
    assert not [s for s in api.get("/sandboxes").json()["sandboxes"] if s["metadata"].get("workspace.build")]


def test_time_limit_and_cancel_delete_the_step_sandbox(api: httpx.Client, base: str) -> None:
    context = context_tar({"Containerfile": f"FROM {base}\nRUN echo $((6*7)); sleep 60\n"})
    timed = build(api, context, "test/slow:1", timeout=2)
    assert timed["state"] == "error" and timed["error"]["code"] == "BUILD_TIMEOUT", timed
    assert timed["error"]["step"] == 0

    started = start_build(api, context, "test/slow:2")
    assert started.status_code == 202, started.text
    build_id = started.json()["id"]
    for event, _, data in _stream(api, build_id):  # wait until the step runs
        if event == "log" and "42\n" in json.loads(data)["text"]:  # the step's output: it runs
            break
    assert api.delete(f"/builds/{build_id}").status_code == 204
    cancelled = wait_build(api, build_id)
    assert cancelled["state"] == "error" and cancelled["error"]["code"] == "BUILD_CANCELLED"
    assert not [s for s in api.get("/sandboxes").json()["sandboxes"] if s["metadata"].get("workspace.build")]
    assert api.get("/templates/test/slow:2").status_code == 404
    assert api.delete(f"/builds/{build_id}").status_code == 204  # a finished build's record goes
    gone = api.get(f"/builds/{build_id}")
    assert gone.status_code == 404 and gone.json()["code"] == "BUILD_NOT_FOUND", gone.text


def _stream(api: httpx.Client, build_id: str, **params: Any) -> Iterator[tuple[str, str | None, str]]:
    with api.stream("GET", f"/builds/{build_id}/logs", params=params) as response:
        assert response.status_code == 200
        buffer = ""
        for text in response.iter_text():
            buffer += text
            *blocks, buffer = buffer.split("\n\n")
            yield from sse_events("\n\n".join(blocks) + "\n\n")


def test_log_is_reread_from_an_offset(api: httpx.Client, built: dict[str, Any]) -> None:
    events = list(_stream(api, built["id"]))
    logs = [(int(i or 0), json.loads(d)) for e, i, d in events if e == "log"]
    assert events[-1][0] == "end" and json.loads(events[-1][2])["state"] == "ready"
    whole = "".join(d["text"] for _, d in logs)
    assert "step 7/11" in whole and "built test/built:1" in whole
    middle = len(whole.encode()) // 2
    tail = list(_stream(api, built["id"], offset=middle))
    assert "".join(json.loads(d)["text"] for e, _, d in tail if e == "log") == whole.encode()[middle:].decode()
    resumed = api.get(f"/builds/{built['id']}/logs", headers={"Last-Event-ID": str(logs[0][0])})
    assert (
        "".join(json.loads(d)["text"] for e, _, d in sse_events(resumed.text) if e == "log")
        == whole[len(logs[0][1]["text"]) :]
    )


@pytest.mark.parametrize(
    ("containerfile", "extra", "status", "code", "needle"),
    [
        ("FROM nothing/here:1\nRUN true\n", {}, 404, "TEMPLATE_NOT_FOUND", "nothing/here:1"),
        ("FROM {base}\nHEALTHCHECK CMD true\n", {}, 400, "INVALID_REQUEST", "line 2: HEALTHCHECK is not supported"),
        ("FROM {base}\nCOPY ../secret /x\n", {}, 400, "INVALID_REQUEST", "outside the build context"),
        ("FROM {base}\nCOPY escape /x\n", {"@escape": "../../etc"}, 400, "INVALID_REQUEST", "unsafe entry"),
        ("FROM {base}\nADD https://example.com/x /x\n", {}, 400, "INVALID_REQUEST", "remote URL"),
        ("FROM default\nRUN true\n", {}, 400, "INVALID_REQUEST", "image template"),
        ("FROM {base}\nRUN true\n", {"../evil": "x"}, 400, "INVALID_REQUEST", "unsafe entry"),
    ],
)
def test_refused_before_any_step(
    api: httpx.Client, base: str, containerfile: str, extra: dict[str, str], status: int, code: str, needle: str
) -> None:
    links = {name[1:]: target for name, target in extra.items() if name.startswith("@")}
    plain = {name: content for name, content in extra.items() if not name.startswith("@")}
    context = context_tar({"Containerfile": containerfile.format(base=base), **plain}, links=links)
    response = start_build(api, context, "test/refused:1")
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert needle in response.json()["message"]


def test_build_cut_by_a_server_crash_ends_in_error_and_its_sandbox_goes(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    root = data_root()
    server = start_server(root / "data")
    try:
        with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as client:
            base = import_busybox(client, tmp_path_factory.mktemp("crash") / "busybox.tar")
            context = context_tar({"Containerfile": f"FROM {base}\nRUN echo $((6*7)); sleep 120\n"})
            started = start_build(client, context, "test/crashed:1")
            assert started.status_code == 202, started.text
            build_id = started.json()["id"]
            for event, _, data in _stream(client, build_id):
                if event == "log" and "42\n" in json.loads(data)["text"]:  # the step's output: it runs
                    break
            step_sandbox = client.get(f"/builds/{build_id}").json()["sandbox_id"]
            assert step_sandbox
        stop_server(server, signal.SIGKILL)  # the step's sandbox outlives the server
        server = start_server(root / "data", port=int(server.url.rsplit(":", 1)[1]))
        with httpx.Client(base_url=server.url + "/api/v1", timeout=60) as client:
            record = client.get(f"/builds/{build_id}").json()
            assert record["state"] == "error" and record["error"]["code"] == "BUILD_CANCELLED", record
            assert "restarted" in record["error"]["message"] and record["sandbox_id"] is None
            assert (record["error"]["step"], record["error"]["line"]) == (0, 2)
            assert client.get(f"/sandboxes/{step_sandbox}").status_code == 404
            assert client.get("/sandboxes").json()["sandboxes"] == []
            assert client.get("/templates/test/crashed:1").status_code == 404
            assert "restarted" in client.get(f"/builds/{build_id}/logs").text  # the log says so too
    finally:
        stop_server(server)
        shutil.rmtree(root, ignore_errors=True)
