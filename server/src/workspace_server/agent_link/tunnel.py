"""A byte tunnel to a port inside a sandbox, relayed by its agent (agent/ports.py)."""

from __future__ import annotations

from workspace_server.agent import ops, wire
from workspace_server.agent_link.connection import AgentDisconnected, AgentStream, StreamEnded, error_from_reply


class TunnelClosed(Exception):
    """The tunnel ended (the port closed it, or the agent link dropped) while we were writing."""


class PortTunnel:
    """A TCP connection to `127.0.0.1:port` inside the sandbox, as a pair of byte streams.

    `read()` returns b"" once the port stopped sending (or the link dropped); `write()`
    waits for the agent's credit, so a port that does not read slows only this tunnel."""

    def __init__(self, stream: AgentStream, port: int) -> None:
        self._stream = stream
        self.port = port
        self._at_eof = False

    async def read(self) -> bytes:
        while not self._at_eof:
            try:
                kind, payload = await self._stream.recv()
            except AgentDisconnected:
                self._at_eof = True
                break
            if kind in (wire.OUT, wire.ERR):
                return bytes(payload)
            if kind == wire.MSG and payload.get("type") == ops.ERROR:
                self._at_eof = True
                raise error_from_reply(payload)
            if kind == wire.CLOSE or (kind == wire.MSG and payload.get("type") == ops.EOF):
                self._at_eof = True
        return b""

    async def write(self, data: bytes) -> None:
        try:
            await self._stream.send_data(data)
        except (StreamEnded, AgentDisconnected):
            raise TunnelClosed from None

    async def close_write(self) -> None:
        """Half-close: the port reads EOF, and may still answer."""
        try:
            await self._stream.send_message(ops.eof())
        except AgentDisconnected:
            raise TunnelClosed from None

    def close(self) -> None:
        self._stream.close()
