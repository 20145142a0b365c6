"""Mutual proof of identity on a TCP agent link, before the frames of wire.py begin.

Standard library only: imported by the in-sandbox agent too.

In a cluster the server reaches an agent at its pod's IP, and pod IPs are reused: whatever
answers at an address may be another sandbox's agent, or anything else. Both sides hold the
sandbox's token (an HMAC of its id under the server's key, delivered to the pod in a
Secret), and each proves it to the other over fresh nonces, so nothing is replayable:

  agent -> host   MAGIC, nonce_a (32 random bytes)
  host  -> agent  {"sandbox_id", "nonce": nonce_h, "proof": MAC(token, "host", ...)}
                  (+ "bind" once, in agent-sandbox mode: see below)
  agent -> host   {"ok": true, "proof": MAC(token, "agent", ...)} or {"ok": false, "error"}

The agent refuses a host naming another sandbox or without a valid proof (so nobody else
on the pod network can drive it), and the host refuses an agent that cannot prove the id it
expects (so a pod at a reused IP is never taken for another sandbox). An agent made before
its sandbox existed (a SandboxWarmPool's) starts unbound; the host's first handshake binds
it, naming the pod's uid, which only the Kubernetes API and the pod itself know.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict

MAGIC = b"WSAGENT1"
NONCE_BYTES = 32
LENGTH = struct.Struct(">I")
MAX_MESSAGE = 4096
TIMEOUT = 10.0  # seconds either side waits for the other's part of the handshake


class HandshakeError(Exception):
    """The peer could not prove who it is, or broke the handshake."""


def proof(token: str, role: str, nonce_agent: bytes, nonce_host: bytes, sandbox_id: str) -> str:
    message = b"\0".join((role.encode(), nonce_agent, nonce_host, sandbox_id.encode()))
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def verify(expected: str, given: object) -> bool:
    return isinstance(given, str) and hmac.compare_digest(expected.encode(), given.encode())


def encode_message(message: Dict[str, Any]) -> bytes:
    payload = json.dumps(message, separators=(",", ":")).encode()
    return LENGTH.pack(len(payload)) + payload


def decode_length(header: bytes) -> int:
    (length,) = LENGTH.unpack(header)
    if length > MAX_MESSAGE:
        raise HandshakeError("handshake message of %d bytes is too large" % length)
    return int(length)


def decode_message(payload: bytes) -> Dict[str, Any]:
    try:
        message = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise HandshakeError("malformed handshake message") from None
    if not isinstance(message, dict):
        raise HandshakeError("a handshake message must be a JSON object")
    return message
