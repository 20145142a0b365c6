from __future__ import annotations

import codecs
import json
import random

import pytest

from workspace_server.api.routes.processes import sse
from workspace_server.services.event_streams import ProcessEvent, Utf8Stream


def test_sse_frames() -> None:
    assert sse(None) == b": keepalive\n\n"
    frame = sse(ProcessEvent("stdout", {"data": "a\nb"})).decode()
    assert frame.startswith("event: stdout\ndata: ") and frame.endswith("\n\n")
    assert json.loads(frame.split("data: ", 1)[1]) == {"data": "a\nb"}


def test_sse_output_event_is_one_data_line_whatever_the_text() -> None:
    """Output is arbitrary: every character that could end an SSE line or the JSON string
    is escaped, and the text comes back exactly."""
    hostile = 'line\r\nnext\rcr\x00nul\x1besc"quote\\back\u2028sep é€ 🚀\n\ndata: fake\n\n'
    frame = sse(ProcessEvent("stderr", {"data": hostile}))
    head, data_line, rest = frame.split(b"\n", 2)
    assert head == b"event: stderr" and rest == b"\n"
    assert data_line.startswith(b"data: ")
    assert json.loads(data_line[len(b"data: ") :]) == {"data": hostile}


def test_sse_other_events() -> None:
    frame = sse(ProcessEvent("exit", {"code": 3}))
    assert frame.startswith(b"event: exit\ndata: ") and json.loads(frame.split(b"data: ", 1)[1]) == {"code": 3}


def test_utf8_is_never_split() -> None:
    decoder = Utf8Stream()
    encoded = "é€".encode()
    parts = [decoder.feed(encoded[i : i + 1]) for i in range(len(encoded))]
    assert "".join(parts) == "é€"
    assert all(p in ("", "é", "€") for p in parts)
    assert decoder.feed(b"\xff") == "\ufffd"


@pytest.mark.parametrize("seed", range(40))
def test_pieces_read_like_the_stdlib_incremental_decoder(seed: int) -> None:
    rng = random.Random(seed)
    alphabet = ["a", "\n", "é", "€", "😀", "\u2028"]
    data = b"".join(
        rng.choice(alphabet).encode() if rng.random() < 0.9 else bytes([rng.choice(INVALID)]) for _ in range(300)
    )
    chunks, position = [], 0
    while position < len(data):
        size = rng.randint(1, 9)
        chunks.append(data[position : position + size])
        position += size
    ours = Utf8Stream()
    text = "".join(ours.feed(chunk) for chunk in chunks) + ours.flush()
    assert text == codecs.getincrementaldecoder("utf-8")(errors="replace").decode(data, final=True)


INVALID = [0x80, 0xBF, 0xC0, 0xE2, 0xF0, 0xF8, 0xFF]  # lone continuations, bad and unfinished leads


def test_an_unfinished_character_at_the_end_becomes_a_replacement_character() -> None:
    decoder = Utf8Stream()
    assert decoder.feed("ab€".encode()[:-1]) == "ab"
    assert decoder.flush() == "\ufffd"
    assert decoder.flush() == ""
