"""The agent link's framing, shared by the in-sandbox agent and the host.

Standard library only: this file is imported inside sandboxes by any python3 >= 3.9.

One stream socket carries many logical streams. Every frame is a fixed header
(payload length, stream id, kind) followed by the payload. The host opens a stream with
an OPEN frame whose JSON payload names the operation; both sides then exchange JSON
control messages (MSG), binary data (OUT/ERR from the agent, IN to the agent) and
flow-control CREDIT frames, and finish with CLOSE.

Flow control is per stream and per direction, like HTTP/2 windows: a sender may have at
most `WINDOW` unacknowledged data bytes in flight, and the receiver grants credit back
as its consumer takes the data. One slow consumer therefore never stalls the others,
and neither side buffers more than a window per stream.
"""

from __future__ import annotations

import json
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:  # typing costs the agent ~3 ms of start-up, and annotations are strings here
    from typing import Any, Dict, Tuple

HEADER = struct.Struct(">IIB")
CREDIT_PAYLOAD = struct.Struct(">I")

OPEN = 1  # host -> agent: JSON {"op": ..., ...}; starts a stream
MSG = 2  # either way: JSON control message
OUT = 3  # agent -> host: stdout bytes, or file contents
ERR = 4  # agent -> host: stderr bytes
IN = 5  # host -> agent: stdin bytes, or file contents being written
CREDIT = 6  # either way: grants the peer more data bytes on this stream
CLOSE = 7  # either way: the stream is finished; no more frames follow on it

DATA_KINDS = (OUT, ERR, IN)

WINDOW = 4 * 1024 * 1024
# The host also bounds a stream's unread frames (many tiny ones cost memory too), so a sender
# sends at most this many data frames between two credit frames; the host grants credit when
# it has read a quarter of the window or everything it had.
MAX_UNACKED_FRAMES = 512
CHUNK = 256 * 1024
MAX_FRAME = CHUNK + 64 * 1024  # data chunk or JSON message, whichever is larger

PROTOCOL_VERSION = 1


class ProtocolError(Exception):
    """The peer sent a frame that breaks the protocol."""


def encode(stream_id: int, kind: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(len(payload), stream_id, kind) + payload


def encode_json(stream_id: int, kind: int, message: Dict[str, Any]) -> bytes:
    return encode(stream_id, kind, json.dumps(message, separators=(",", ":")).encode())


def encode_credit(stream_id: int, amount: int) -> bytes:
    return encode(stream_id, CREDIT, CREDIT_PAYLOAD.pack(amount))


def decode_header(header: bytes) -> Tuple[int, int, int]:
    length, stream_id, kind = HEADER.unpack(header)
    if length > MAX_FRAME:
        raise ProtocolError("frame of %d bytes exceeds the limit" % length)
    if not OPEN <= kind <= CLOSE:
        raise ProtocolError("unknown frame kind %d" % kind)
    return length, stream_id, kind


def decode_json(payload: bytes) -> Dict[str, Any]:
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("malformed JSON message: %s" % exc) from None
    if not isinstance(message, dict):
        raise ProtocolError("a message must be a JSON object")
    return message


def decode_credit(payload: bytes) -> int:
    if len(payload) != CREDIT_PAYLOAD.size:
        raise ProtocolError("malformed credit frame")
    amount: int = CREDIT_PAYLOAD.unpack(payload)[0]
    return amount
