from __future__ import annotations

import json

from workspace_server.api.routes.processes import sse
from workspace_server.services.processes import ProcessEvent, Utf8Stream


def test_sse_frames() -> None:
    assert sse(None) == b": keepalive\n\n"
    frame = sse(ProcessEvent("stdout", {"data": "a\nb"})).decode()
    assert frame.startswith("event: stdout\ndata: ") and frame.endswith("\n\n")
    assert json.loads(frame.split("data: ", 1)[1]) == {"data": "a\nb"}


def test_utf8_is_never_split() -> None:
    decoder = Utf8Stream()
    encoded = "é€".encode()
    parts = [decoder.feed(encoded[i:i + 1]) for i in range(len(encoded))]
    assert "".join(parts) == "é€"
    assert all(p in ("", "é", "€") for p in parts)
    assert decoder.feed(b"\xff") == "\ufffd"
