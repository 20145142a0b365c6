"""The host's client of one sandbox's agent: one method per operation of agent/ops.py.

This is the boundary where the agent link's failures become domain errors, once (as
httpx's `map_httpcore_exceptions` does): a dropped link (`AgentDisconnected`) becomes
`AgentNotConnected`, an error reply becomes a `WorkspaceError` with the agent's code.
Services use this class and never the wire framing or the operation dicts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Any

from workspace_server.agent import ops, wire
from workspace_server.agent_link.address import AgentAddress
from workspace_server.agent_link.background import FollowStream, WatchStream
from workspace_server.agent_link.connection import (
    AgentConnection,
    AgentStream,
    StreamEnded,
)
from workspace_server.agent_link.listing import DirectoryListing
from workspace_server.agent_link.streams import CommandStream, map_disconnect
from workspace_server.agent_link.tunnel import PortTunnel
from workspace_server.domain.errors import AgentNotConnected, WorkspaceError


class SandboxAgent:
    """One sandbox's agent, as the services see it: its link's life (connect, alive,
    close, who hears a disconnect) and one method per operation."""

    def __init__(self, sandbox_id: str, connection: AgentConnection) -> None:
        self.sandbox_id = sandbox_id
        self._connection = connection

    @classmethod
    async def connect(
        cls,
        sandbox_id: str,
        address: AgentAddress,
        timeout: float,
        on_disconnect: Callable[[], Awaitable[None]] | None = None,
    ) -> SandboxAgent:
        """Connect (retrying while the agent starts) and say hello; AgentNotConnected if it
        does not answer within `timeout`."""
        with map_disconnect(sandbox_id, "the sandbox agent did not answer"):
            connection = await AgentConnection.connect(address, timeout, on_disconnect)
        return cls(sandbox_id, connection)

    @property
    def alive(self) -> bool:
        return self._connection.alive

    @property
    def protocol_error(self) -> str | None:
        """Why the link was dropped, when the agent broke the protocol (it is not reconnected)."""
        return self._connection.protocol_error

    def set_disconnect_handler(self, on_disconnect: Callable[[], Awaitable[None]] | None) -> None:
        """Who hears that the link dropped (a pool sandbox changes hands when it is claimed)."""
        self._connection.set_disconnect_handler(on_disconnect)

    async def close(self) -> None:
        """Close the link without reporting a disconnect (we chose to go)."""
        await self._connection.close()

    def _mapped(self, reason: str | None = None) -> contextlib.AbstractContextManager[None]:
        return map_disconnect(self.sandbox_id, reason)

    async def _open(self, request: dict[str, Any]) -> AgentStream:
        with self._mapped():
            return await self._connection.open(request)

    async def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        """A one-answer operation."""
        stream = await self._open(request)
        try:
            with self._mapped():
                return await stream.recv_message()
        finally:
            stream.close()

    # ------------------------------------------------------------------ commands
    async def spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        user: str,
        timeout: float | None,
        stdin: bool,
        pty: dict[str, int] | None,
    ) -> CommandStream:
        """Open the command's stream; `CommandStream.started` waits for its pid."""
        stream = await self._open(ops.spawn(argv, env, cwd, user, timeout, stdin, pty))
        return CommandStream(self.sandbox_id, stream)

    async def processes(self) -> list[dict[str, Any]]:
        """The running commands: [{pid, argv, pty}]."""
        return list((await self._request(ops.processes()))["processes"])

    async def signal(self, pid: int, signum: int) -> None:
        await self._request(ops.signal(pid, signum))

    async def shutdown(self, grace: float) -> None:
        """Terminate every command; returns once they exited or `grace` ran out."""
        await self._request(ops.shutdown(grace))

    # ------------------------------------------------------------------ background processes
    # `target` is a pid or a tag; processes are described as ProcessInfo dicts (docs/api.md).
    async def start(
        self,
        argv: list[str],
        env: dict[str, str],
        cwd: str,
        user: str,
        timeout: float | None,
        stdin: bool,
        tag: str | None,
        log_bytes: int,
        retention: float,
    ) -> dict[str, Any]:
        request = ops.start(argv, env, cwd, user, timeout, stdin, tag, log_bytes, retention)
        return dict((await self._request(request))["process"])

    async def process(self, target: int | str) -> dict[str, Any]:
        return dict((await self._request(ops.process(target)))["process"])

    async def wait(self, target: int | str, timeout: float) -> dict[str, Any]:
        return dict((await self._request(ops.wait(target, timeout)))["process"])

    async def kill_process(self, target: int | str, signum: int) -> None:
        await self._request(ops.kill_process(target, signum))

    async def close_stdin(self, target: int | str) -> None:
        await self._request(ops.close_stdin(target))

    async def send_stdin(self, target: int | str, chunks: AsyncIterable[bytes]) -> int:
        """Feed `chunks` to the process's stdin as fast as it reads them (the agent grants
        credit for bytes written to the pipe); the byte count written."""
        from workspace_server.agent_link.background import feed_stdin

        return await feed_stdin(self.sandbox_id, await self._open(ops.stdin(target)), chunks)

    async def follow(self, target: int | str, offset: int) -> FollowStream:
        """Follow the output log from `offset`; `FollowStream.started` says where it begins."""
        return FollowStream(self.sandbox_id, await self._open(ops.follow(target, offset)))

    async def connect_port(self, port: int) -> PortTunnel:
        """A tunnel to 127.0.0.1:`port` inside the sandbox; PORT_UNREACHABLE if nothing listens."""
        stream = await self._open(ops.connect_port(port))
        try:
            with self._mapped():
                await stream.recv_message()
        except BaseException:
            stream.close()
            raise
        return PortTunnel(stream, port)

    async def watch(self, path: str, recursive: bool) -> WatchStream:
        """Watch a path; `WatchStream.ready` returns once the watch is in place."""
        return WatchStream(self.sandbox_id, await self._open(ops.watch(path, recursive)))

    # ------------------------------------------------------------------ files
    async def stat(self, path: str) -> dict[str, Any]:
        return dict((await self._request(ops.stat(path)))["info"])

    async def exists(self, path: str) -> bool:
        return bool((await self._request(ops.exists(path)))["exists"])

    async def list_dir(self, path: str) -> DirectoryListing:
        """Start listing a directory; errors (not found...) raise here, before any entry."""
        stream = await self._open(ops.list_dir(path))
        try:
            with self._mapped():
                ready = await stream.recv_message()  # or the error that says why not
            if ready.get("type") != ops.READY:
                raise AgentNotConnected(self.sandbox_id, "the sandbox agent answered a listing with something else")
        except BaseException:
            stream.close()
            raise
        return DirectoryListing(self.sandbox_id, stream)

    async def mkdir(self, path: str, recursive: bool) -> dict[str, Any]:
        return dict((await self._request(ops.mkdir(path, recursive)))["info"])

    async def remove(self, path: str, recursive: bool) -> None:
        await self._request(ops.remove(path, recursive))

    async def move(self, source: str, destination: str) -> dict[str, Any]:
        return dict((await self._request(ops.move(source, destination)))["info"])

    async def copy(self, source: str, destination: str, recursive: bool) -> dict[str, Any]:
        return dict((await self._request(ops.copy(source, destination, recursive)))["info"])

    async def read(self, path: str) -> tuple[int, AsyncIterator[bytes]]:
        """The file's size, then its bytes; errors (not found...) raise before any byte.
        Closing the iterator early ends the read."""
        stream = await self._open(ops.read(path))
        try:
            with self._mapped():
                header = await stream.recv_message()
        except BaseException:
            stream.close()
            raise

        size = header.get("size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            stream.close()
            raise AgentNotConnected(self.sandbox_id, "the sandbox agent answered a read without a valid size")

        async def chunks() -> AsyncIterator[bytes]:
            # Exactly the announced size (the Content-Length): a file still growing (a log
            # being appended to) is cut there, and a hostile agent cannot overrun it either.
            left = size
            try:
                with self._mapped("the sandbox agent disconnected during the download"):
                    while left > 0:
                        kind, payload = await stream.recv()
                        if kind == wire.OUT:
                            chunk = payload if len(payload) <= left else payload[:left]
                            left -= len(chunk)
                            yield chunk
                        elif kind == wire.MSG or kind == wire.CLOSE:
                            return
            finally:
                stream.close()

        return size, chunks()

    async def write(self, path: str, chunks: AsyncIterable[bytes]) -> dict[str, Any]:
        """Write the file from `chunks` (atomically: the agent renames it into place at the
        end); its info. An exception from `chunks` aborts the upload and leaves no file."""
        answer = await self._upload(ops.write(path), chunks, "the upload")
        return dict(answer["info"])

    async def unpack(self, path: str, chunks: AsyncIterable[bytes]) -> int:
        """Unpack a tar (from `chunks`) at `path` as root, owners and modes as it says (a
        build's COPY); the count of entries."""
        answer = await self._upload(ops.unpack(path), chunks, "the unpack")
        return int(answer.get("entries", 0))

    async def _upload(self, request: dict[str, Any], chunks: AsyncIterable[bytes], what: str) -> dict[str, Any]:
        """Send `chunks` as the data of `request`, then eof; the agent's OK answer. Closing the
        stream before eof (an exception from `chunks`) makes the agent discard what it got."""
        stream = await self._open(request)
        try:
            with self._mapped(f"the sandbox agent disconnected during {what}"):
                await stream.recv_message()  # "ready", or the error that says why not
                try:
                    async for chunk in chunks:
                        if chunk:
                            await stream.send_data(chunk)
                    await stream.send_message(ops.eof())
                except StreamEnded:
                    pass  # the agent stopped early (a bad entry, disk full...): its answer says why
                answer = await stream.recv_message()
            if answer.get("type") != ops.OK:
                raise WorkspaceError(f"the agent ended {what} early", code="INTERNAL")
            return answer
        finally:
            stream.close()
