"""SSEDecoder: the text/event-stream rules, under every way a stream can be chunked."""

from __future__ import annotations

import json
import random

import pytest

from workspace_sdk._sse import ServerSentEvent, SSEDecoder


def decode(*chunks: bytes) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    return events


def test_event_and_data_fields() -> None:
    assert decode(b'event: stdout\ndata: {"data": "hi"}\n\n') == [ServerSentEvent("stdout", '{"data": "hi"}')]


def test_event_type_defaults_to_message() -> None:
    assert decode(b"data: x\n\n") == [ServerSentEvent("message", "x")]


def test_multiline_data_is_joined_with_newlines() -> None:
    assert decode(b"data: one\ndata: two\ndata:\ndata: four\n\n") == [ServerSentEvent("message", "one\ntwo\n\nfour")]


def test_comments_are_ignored_including_keepalives() -> None:
    stream = b": keepalive\n\nevent: exit\n: in the middle\ndata: {}\n\n: keepalive\n\n"
    assert decode(stream) == [ServerSentEvent("exit", "{}")]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending(newline: bytes) -> None:
    stream = newline.join([b"event: a", b"data: 1", b"", b"event: b", b"data: 2", b"", b""])
    assert decode(stream) == [ServerSentEvent("a", "1"), ServerSentEvent("b", "2")]


def test_mixed_line_endings() -> None:
    assert decode(b"event: a\r\ndata: 1\rdata: 2\n\r\n") == [ServerSentEvent("a", "1\n2")]


def test_crlf_split_between_chunks_is_one_line_end() -> None:
    # A CR at the end of one chunk and the LF at the start of the next must not produce an
    # extra blank line (which would dispatch too early and drop the second data line).
    assert decode(b"data: 1\r", b"\ndata: 2\r", b"\n\r", b"\n") == [ServerSentEvent("message", "1\n2")]


def test_id_and_retry_are_ignored() -> None:
    assert decode(b"id: 7\nretry: 1000\nevent: e\ndata: d\n\n") == [ServerSentEvent("e", "d")]


def test_unknown_fields_are_ignored() -> None:
    assert decode(b"foo: bar\ndata: d\n\n") == [ServerSentEvent("message", "d")]


def test_only_one_leading_space_is_stripped() -> None:
    assert decode(b"data:  two spaces\ndata:none\n\n") == [ServerSentEvent("message", " two spaces\nnone")]


def test_field_without_colon_has_empty_value() -> None:
    assert decode(b"data\ndata\n\n") == [ServerSentEvent("message", "\n")]


def test_colon_inside_value_is_kept() -> None:
    assert decode(b'data: {"a": "b:c"}\n\n') == [ServerSentEvent("message", '{"a": "b:c"}')]


def test_event_without_data_is_not_dispatched_and_type_resets() -> None:
    assert decode(b"event: lonely\n\ndata: x\n\n") == [ServerSentEvent("message", "x")]


def test_incomplete_event_at_end_of_stream_is_never_dispatched() -> None:
    assert decode(b"event: a\ndata: 1\n") == []
    assert decode(b"data: 1") == []


def test_byte_order_mark_at_start_is_skipped() -> None:
    assert decode(b"\xef\xbb", b"\xbfdata: x\n\n") == [ServerSentEvent("message", "x")]


def test_utf8_character_split_across_chunks() -> None:
    payload = "data: h\u00e9llo \u2603 \U0001f600\n\n".encode()
    events = decode(*[payload[i : i + 1] for i in range(len(payload))])
    assert events == [ServerSentEvent("message", "h\u00e9llo \u2603 \U0001f600")]


def test_invalid_utf8_is_replaced_not_fatal() -> None:
    assert decode(b"data: \xff\n\n") == [ServerSentEvent("message", "\ufffd")]


def test_feed_returns_events_in_order_across_calls() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"event: a\ndata: 1\n\nevent: b\nda") == [ServerSentEvent("a", "1")]
    assert decoder.feed(b"ta: 2\n") == []
    assert decoder.feed(b"\n") == [ServerSentEvent("b", "2")]
    assert decoder.feed(b"") == []


STREAM = (
    b": keepalive\r\n\r\n"
    b'event: start\r\ndata: {"pid": 42}\r\n\r\n'
    b'event: stdout\ndata: {"data": "line 1\\n"}\n\n'
    b'event: stderr\rdata: {"data": "\xc3\xa9rr"}\r\r'
    b"data: a\ndata: b\n\n"
    b'event: exit\r\ndata: {"code": 0}\r\n\r\n'
)
EXPECTED = [
    ServerSentEvent("start", '{"pid": 42}'),
    ServerSentEvent("stdout", '{"data": "line 1\\n"}'),
    ServerSentEvent("stderr", '{"data": "\u00e9rr"}'),
    ServerSentEvent("message", "a\nb"),
    ServerSentEvent("exit", '{"code": 0}'),
]


def test_whole_stream() -> None:
    assert decode(STREAM) == EXPECTED


@pytest.mark.parametrize("split", range(1, len(STREAM)))
def test_every_two_way_split(split: int) -> None:
    assert decode(STREAM[:split], STREAM[split:]) == EXPECTED


def test_byte_by_byte() -> None:
    assert decode(*[STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


@pytest.mark.parametrize("seed", range(50))
def test_random_chunkings(seed: int) -> None:
    rng = random.Random(seed)
    chunks, position = [], 0
    while position < len(STREAM):
        size = rng.randint(1, 12)
        chunks.append(STREAM[position : position + size])
        position += size
    assert decode(*chunks) == EXPECTED


def test_a_long_line_over_many_chunks_with_characters_split_at_their_edges() -> None:
    text = ("\u00e9" + "x" * 65534 + "\n") * 20
    payload = ('event: stdout\ndata: {"data": "' + text.replace("\n", "\\n") + '"}\n\n').encode()
    # 64 KiB reads, and a cut inside every 2-byte character.
    inside_characters = (i + 1 for i in range(len(payload)) if payload[i] == 0xC3)
    cuts = sorted({*range(0, len(payload), 65536), *inside_characters})
    chunks = [payload[a:b] for a, b in zip(cuts, [*cuts[1:], len(payload)], strict=True)]
    events = decode(*chunks)
    assert len(events) == 1
    assert events[0].event == "stdout"
    assert json.loads(events[0].data)["data"] == text
