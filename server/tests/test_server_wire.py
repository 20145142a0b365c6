from __future__ import annotations

import pytest

from workspace_server.agent import wire


def test_frames_round_trip() -> None:
    frame = wire.encode_json(7, wire.MSG, {"type": "ok", "n": 1})
    length, stream_id, kind = wire.decode_header(frame[: wire.HEADER.size])
    assert (stream_id, kind) == (7, wire.MSG)
    assert wire.decode_json(frame[wire.HEADER.size :]) == {"type": "ok", "n": 1}
    assert length == len(frame) - wire.HEADER.size


def test_credit_round_trip() -> None:
    frame = wire.encode_credit(3, 65536)
    assert wire.decode_credit(frame[wire.HEADER.size :]) == 65536


@pytest.mark.parametrize(
    "header",
    [
        wire.HEADER.pack(wire.MAX_FRAME + 1, 1, wire.OUT),
        wire.HEADER.pack(1, 1, 0),
        wire.HEADER.pack(1, 1, 99),
    ],
)
def test_hostile_headers_are_protocol_errors(header: bytes) -> None:
    with pytest.raises(wire.ProtocolError):
        wire.decode_header(header)


@pytest.mark.parametrize("payload", [b"not json", b"[1, 2]", b"\xff\xfe"])
def test_hostile_messages_are_protocol_errors(payload: bytes) -> None:
    with pytest.raises(wire.ProtocolError):
        wire.decode_json(payload)


def test_malformed_credit_is_a_protocol_error() -> None:
    with pytest.raises(wire.ProtocolError):
        wire.decode_credit(b"\x00")
