"""Profile analysis and SSE parsing: pure code, fed with synthetic profiler output."""

from __future__ import annotations

import json
from typing import Any

import pytest

from benchmarks.profile_analysis import (
    IDLE,
    PROFILER,
    agent_category,
    annotate_with_cpu,
    breakdown_rows,
    pyinstrument_breakdown,
    pyspy_breakdown,
)
from benchmarks.sse import SseParser, SseTally, parse_event

SITE = "/venv/lib/python3.11/site-packages"
STDLIB = "/usr/lib/python3.11"
WS = "/repo/server/src/workspace_server"


def frame(function: str, path: str, time: float, *children: dict[str, Any], cls: str = "") -> dict[str, Any]:
    return {"function": function, "class_name": cls, "file_path": path, "time": time, "children": list(children)}


def tree() -> dict[str, Any]:
    return {
        "root_frame": frame(
            "run",
            f"{STDLIB}/asyncio/runners.py",
            10.0,
            frame("[self]", f"{STDLIB}/asyncio/runners.py", 4.0),
            frame(
                "run_asgi",
                f"{SITE}/uvicorn/protocols/http/httptools_impl.py",
                3.0,
                frame(
                    "app",
                    f"{SITE}/fastapi/routing.py",
                    2.0,
                    frame(
                        "run_in_threadpool",
                        f"{SITE}/starlette/concurrency.py",
                        1.0,
                        frame("lock.release", "<built-in>", 1.0),
                    ),
                ),
                cls="RequestResponseCycle",
            ),
            frame(
                "open",
                f"{WS}/agent_link/connection.py",
                2.0,
                frame("write", f"{STDLIB}/asyncio/streams.py", 1.5, cls="StreamWriter"),
                frame("dumps", f"{STDLIB}/json/__init__.py", 0.25),
            ),
            frame("start", f"{SITE}/pyinstrument/profiler.py", 0.5),
            frame("_step", f"{STDLIB}/asyncio/tasks.py", 0.5),
            cls="Runner",
        )
    }


def test_pyinstrument_breakdown_charges_self_time_by_category() -> None:
    b = pyinstrument_breakdown(tree())
    assert b.total == 10.0
    assert b.idle == 4.0
    assert b.profiler == 0.5
    assert b.busy == 5.5
    by = b.seconds
    assert by["HTTP server: uvicorn + httptools/h11 (parsing, protocol, ASGI glue)"] == 1.0
    assert by["web framework: FastAPI/Starlette (routing, DI, middleware, responses, telemetry hooks)"] == 1.0
    assert by["threadpool hand-off: sync code run in a worker thread (starlette run_in_threadpool)"] == 1.0
    # asyncio streams called by the agent link count for the link; JSON stays JSON
    assert by["agent link: framing, streams, flow control, socket writes (agent_link/, wire.py)"] == 1.75
    assert by["JSON encode/decode"] == 0.25
    assert by["asyncio machinery: tasks, futures, event-loop callbacks"] == 0.5


def test_breakdown_rows_leave_out_idle_and_profiler_and_sort_by_cost() -> None:
    rows = breakdown_rows(pyinstrument_breakdown(tree()), ops=100)
    categories = [r["category"] for r in rows]
    assert IDLE not in categories and PROFILER not in categories
    assert categories[0].startswith("agent link")
    assert rows[0]["ms_per_op"] == pytest.approx(17.5)
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert breakdown_rows(pyinstrument_breakdown(tree()), ops=0) == []


def test_annotate_with_cpu_scales_shares() -> None:
    profile: dict[str, Any] = {
        "server-run": {
            "rows": [
                {"category": "a", "ms_per_op": 9.0, "share": 0.25},
                {"category": "b", "ms_per_op": 1.0, "share": None},
            ]
        }
    }
    annotate_with_cpu(profile, {"server-run": 4.0, "server-missing": 1.0})
    rows = profile["server-run"]["rows"]
    assert rows[0]["est_ms_per_op"] == 1.0
    assert "est_ms_per_op" not in rows[1]


PYSPY = """\
thread (0x1): Thread-3 (handle);Thread._bootstrap (threading.py:995);Agent.handle (agent.py:388);\
Agent.op_spawn (agent.py:481);Popen.__init__ (subprocess.py:1024);Popen._execute_child (subprocess.py:1857) 6
thread (0x2): Thread-4 (handle);Agent.op_spawn (agent.py:495);Stream.send (agent.py:143);Link.send (agent.py:196);\
encode_json (wire.py:52);dumps (json/__init__.py:238);JSONEncoder.encode (json/encoder.py:203) 3
thread (0x3): Thread-5 (pump);Agent._start_reader.<locals>.pump (agent.py:751) 1
not a sample line
"""


def test_pyspy_breakdown_uses_the_innermost_matching_frame() -> None:
    b = pyspy_breakdown(PYSPY)
    assert b.total == 10
    assert b.seconds["process spawn: op_spawn setup, spawner hand-off, fork/exec"] == 6
    assert b.seconds["JSON encode/decode"] == 3
    assert b.seconds["output pumps: poll + read of the command's pipes, flow-control window"] == 1
    assert agent_category(["thread (1): x", "something (elsewhere.py:1)"]) == "other (interpreter, threading)"
    rows = breakdown_rows(b, ops=2, seconds_per_unit=0.001)
    assert rows[0]["ms_per_op"] == pytest.approx(3.0)


def test_sse_parser_handles_any_chunking_and_comments() -> None:
    body = (
        b'event: start\ndata: {"pid": 7}\n\n: keepalive\n\n'
        b'event: stdout\ndata: {"data": "hello\\n"}\n\n'
        b'event: stderr\ndata: {"data": "oops"}\n\n'
        b'event: exit\ndata: {"code": 3}\n\n'
    )
    for size in (1, 2, 7, len(body)):
        parser, tally = SseParser(), SseTally()
        for i in range(0, len(body), size):
            for event in parser.feed(body[i : i + size]):
                tally.add(event)
        assert (tally.pid, tally.stdout_chars, tally.stderr_chars, tally.exit_code, tally.events) == (7, 6, 4, 3, 4)
        assert parser.pending == 0


def test_sse_error_event_and_comment_only_blocks() -> None:
    assert parse_event(b": keepalive") is None
    event = parse_event(b'event: error\ndata: {"code": "PROCESS_TIMEOUT", "message": "m"}')
    assert event is not None and event.event == "error"
    tally = SseTally()
    tally.add(event)
    assert tally.error == {"code": "PROCESS_TIMEOUT", "message": "m"}


@pytest.mark.parametrize("text", ["hello\n" * 50, 'quote " and tab \t', "back\\slash", "é ü", "\u2028", ""])
def test_sse_raw_counting_matches_a_full_parse(text: str) -> None:
    body = (
        b"".join(
            f"event: {name}\ndata: {json.dumps({'data': text}, ensure_ascii=False)}\n\n".encode()
            for name in ("stdout", "stderr", "stdout")
        )
        + b'event: exit\ndata: {"code": 0}\n\n'
    )
    parser, tally = SseParser(), SseTally()
    for i in range(0, len(body), 5):
        for block in parser.blocks(body[i : i + 5]):
            tally.add_block(block)
    assert (tally.stdout_chars, tally.stderr_chars, tally.exit_code, tally.events) == (2 * len(text), len(text), 0, 4)
