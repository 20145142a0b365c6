from __future__ import annotations

import json

from workspace_server.api.routes.processes import sse
from workspace_server.services.processes import ProcessEvent, Utf8Stream


def test_sse_frames() -> None:
    assert sse(None) == b": keepalive\n\n"
    frame = sse(ProcessEvent("stdout", {"data": "a\nb"})).decode()
    assert frame.startswith("event: stdout\ndata: ") and frame.endswith("\n\n")
    assert json.loads(frame.split("data: ", 1)[1]) == {"data": "a\nb"}


def test_sse_output_event_is_one_data_line_whatever_the_text() -> None:
    """Output is arbitrary: every character that could end an SSE line or the JSON string
    is escaped, and the text comes back exactly."""
    hostile = "line\r\nnext\rcr\x00nul\x1besc\"quote\\back\u2028sep é€ 🚀\n\ndata: fake\n\n"
    frame = sse(ProcessEvent("stderr", {"data": hostile}))
    head, data_line, rest = frame.split(b"\n", 2)
    assert head == b"event: stderr" and rest == b"\n"
    assert data_line.startswith(b"data: ")
    assert json.loads(data_line[len(b"data: "):]) == {"data": hostile}


def test_sse_other_events() -> None:
    frame = sse(ProcessEvent("exit", {"code": 3}))
    assert frame.startswith(b"event: exit\ndata: ") and json.loads(frame.split(b"data: ", 1)[1]) == {"code": 3}


def test_utf8_is_never_split() -> None:
    decoder = Utf8Stream()
    encoded = "é€".encode()
    parts = [decoder.feed(encoded[i:i + 1]) for i in range(len(encoded))]
    assert "".join(parts) == "é€"
    assert all(p in ("", "é", "€") for p in parts)
    assert decoder.feed(b"\xff") == "\ufffd"
