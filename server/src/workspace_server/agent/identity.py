"""The agent's side of the TCP handshake (handshake.py): which sandbox it serves, and the
check of a connecting host before any frame is read from it.

Standard library only (runs inside sandboxes)."""

from __future__ import annotations

import os
import socket
import threading

from . import handshake

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Dict, Optional, Tuple


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read().strip()


class Identity:
    """Either fixed (a pod of our own: its Secret, mounted at `identity_dir`, holds
    `sandbox-id` and `token`) or bound once (a warm-pool pod made before its sandbox: the
    downward API gives `pod-uid` in `bind_dir`, and the first host to name that uid binds
    the agent to its sandbox for the rest of the pod's life)."""

    def __init__(self, identity_dir: Optional[str] = None, bind_dir: Optional[str] = None) -> None:
        self.identity_dir = identity_dir
        self.bind_dir = bind_dir
        self._bound: Optional[Tuple[str, str]] = None
        self._lock = threading.Lock()

    def current(self) -> Optional[Tuple[str, str]]:
        if self.identity_dir is not None:
            try:  # read each time: the kubelet refreshes mounted Secrets in place
                return _read(os.path.join(self.identity_dir, "sandbox-id")), _read(
                    os.path.join(self.identity_dir, "token")
                )
            except OSError:
                return None
        return self._bound

    def bind(self, request: object, sandbox_id: object) -> Optional[str]:
        """Bind to `sandbox_id`; the error to answer, or None."""
        if self.bind_dir is None:
            return "this agent's identity is fixed"
        if not isinstance(request, dict) or not isinstance(sandbox_id, str):
            return "malformed bind"
        token = request.get("token")
        try:
            pod_uid = _read(os.path.join(self.bind_dir, "pod-uid"))
        except OSError:
            return "this pod's uid is unknown"
        if request.get("pod_uid") != pod_uid or not isinstance(token, str) or len(token) < 32:
            return "this is another pod"
        with self._lock:
            if self._bound is None:
                self._bound = (sandbox_id, token)
            elif self._bound != (sandbox_id, token):
                return "this agent is bound to another sandbox"
        return None


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise handshake.HandshakeError("the host closed the connection during the handshake")
        data += chunk
    return data


def _refuse(sock: socket.socket, error: str) -> bool:
    try:
        sock.sendall(handshake.encode_message({"ok": False, "error": error}))
    except OSError:
        pass
    return False


def accept_host(sock: socket.socket, identity: Identity) -> bool:
    """Run the handshake on a freshly accepted connection: True if the host proved it holds
    this sandbox's token (and got our proof back); the connection is then the link."""
    sock.settimeout(handshake.TIMEOUT)  # a silent peer cannot hold the agent
    try:
        nonce_agent = os.urandom(handshake.NONCE_BYTES)
        sock.sendall(handshake.MAGIC + nonce_agent)
        length = handshake.decode_length(_recv_exact(sock, handshake.LENGTH.size))
        hello: Dict[str, Any] = handshake.decode_message(_recv_exact(sock, length))
        if "bind" in hello:
            error = identity.bind(hello["bind"], hello.get("sandbox_id"))
            if error is not None:
                return _refuse(sock, error)
        current = identity.current()
        if current is None:
            return _refuse(sock, "this agent does not know its sandbox yet")
        sandbox_id, token = current
        if hello.get("sandbox_id") != sandbox_id:
            return _refuse(sock, "this agent serves another sandbox")
        try:
            nonce_host = bytes.fromhex(str(hello.get("nonce")))
        except ValueError:
            return _refuse(sock, "malformed nonce")
        if len(nonce_host) != handshake.NONCE_BYTES:
            return _refuse(sock, "malformed nonce")
        expected = handshake.proof(token, "host", nonce_agent, nonce_host, sandbox_id)
        if not handshake.verify(expected, hello.get("proof")):
            return _refuse(sock, "the host's proof is wrong")
        answer = {"ok": True, "proof": handshake.proof(token, "agent", nonce_agent, nonce_host, sandbox_id)}
        sock.sendall(handshake.encode_message(answer))
    except (OSError, handshake.HandshakeError):
        return False
    sock.settimeout(None)
    return True
