"""The host side of a TCP agent link: connect, then the mutual proof of agent/handshake.py."""

from __future__ import annotations

import asyncio
import os
import socket

from workspace_server.agent import handshake
from workspace_server.agent_link.address import TcpAgentAddress

READ_LIMIT = 2**22


async def _read_message(reader: asyncio.StreamReader) -> dict[str, object]:
    length = handshake.decode_length(await reader.readexactly(handshake.LENGTH.size))
    return handshake.decode_message(await reader.readexactly(length))


async def open_tcp_link(address: TcpAgentAddress) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to the agent that proved it serves `address.sandbox_id`.

    Raises HandshakeError if whatever answers there is not that sandbox's agent, and
    OSError if nothing answers."""
    reader, writer = await asyncio.open_connection(address.host, address.port, limit=READ_LIMIT)
    try:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # frames are small and latency-bound
        async with asyncio.timeout(handshake.TIMEOUT):
            greeting = await reader.readexactly(len(handshake.MAGIC) + handshake.NONCE_BYTES)
            if not greeting.startswith(handshake.MAGIC):
                raise handshake.HandshakeError(f"{address.host}:{address.port} is not a Workspace agent")
            nonce_agent = greeting[len(handshake.MAGIC) :]
            nonce_host = os.urandom(handshake.NONCE_BYTES)
            hello: dict[str, object] = {
                "sandbox_id": address.sandbox_id,
                "nonce": nonce_host.hex(),
                "proof": handshake.proof(address.token, "host", nonce_agent, nonce_host, address.sandbox_id),
            }
            if address.bind_pod_uid is not None:
                hello["bind"] = {"pod_uid": address.bind_pod_uid, "token": address.token}
            writer.write(handshake.encode_message(hello))
            answer = await _read_message(reader)
        if answer.get("ok") is not True:
            raise handshake.HandshakeError(f"the agent at {address.host} refused: {answer.get('error')}")
        expected = handshake.proof(address.token, "agent", nonce_agent, nonce_host, address.sandbox_id)
        if not handshake.verify(expected, answer.get("proof")):
            raise handshake.HandshakeError(
                f"the agent at {address.host}:{address.port} cannot prove it is sandbox {address.sandbox_id}"
            )
    except BaseException:
        writer.close()
        raise
    return reader, writer
