"""Hand-written async/sync twins of a local port forward (see _primitives.py for why twins).

A local TCP listener; every connection to it opens one WebSocket to
``/sandboxes/{id}/port-forward/{port}``, and bytes flow both ways as binary messages. The
server answers a failure (nothing listens on the port, the sandbox is gone) with one text
message, its error envelope: the local connection is then closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from types import TracebackType

import websockets.exceptions

from ._async._api_client import AsyncAPIClient
from ._protocol import WebSocketRequest
from ._sync._api_client import APIClient

__all__ = ["AsyncPortForward", "PortForward"]
READ_SIZE = 256 * 1024


class AsyncPortForward:
    """``async with client.sandbox.port_forward(id, 5432) as forward:`` → ``forward.local_port``."""

    def __init__(self, api: AsyncAPIClient, request: WebSocketRequest, host: str, local_port: int) -> None:
        self._api = api
        self._request = request
        self.host = host
        self.local_port = local_port
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.local_port

    async def __aenter__(self) -> AsyncPortForward:
        self._server = await asyncio.start_server(self._serve, self.host, self.local_port)
        self.local_port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop listening and end every forwarded connection."""
        if self._server is not None:
            self._server.close()
            for task in list(self._connections):
                task.cancel()
            for task in list(self._connections):
                with contextlib.suppress(BaseException):
                    await task
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            connection = await self._api.open_websocket(self._request)
        except Exception:
            writer.close()
            self._connections.discard(task)
            return

        async def local_to_remote() -> None:
            while data := await reader.read(READ_SIZE):
                await connection.send(data)

        async def remote_to_local() -> None:
            async for message in connection:
                if isinstance(message, str):
                    return  # the server's error envelope: nothing more will come
                writer.write(message)
                await writer.drain()

        pumps = [asyncio.create_task(local_to_remote()), asyncio.create_task(remote_to_local())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for pump in pumps:
                with contextlib.suppress(BaseException):
                    await pump
            await connection.close()
            writer.close()
            self._connections.discard(task)


class PortForward:
    """``with client.sandbox.port_forward(id, 5432) as forward:`` → ``forward.local_port``."""

    def __init__(self, api: APIClient, request: WebSocketRequest, host: str, local_port: int) -> None:
        self._api = api
        self._request = request
        self.host = host
        self.local_port = local_port
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.local_port

    def __enter__(self) -> PortForward:
        listener = socket.create_server((self.host, self.local_port))
        self.local_port = int(listener.getsockname()[1])
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="workspace-port-forward", daemon=True).start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop listening and end every forwarded connection."""
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        with self._lock:
            sockets, self._sockets = set(self._sockets), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return  # closed
            with self._lock:
                self._sockets.add(sock)
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        try:
            connection = self._api.open_websocket(self._request)
        except Exception:
            self._forget(sock)
            return

        def local_to_remote() -> None:
            try:
                while data := sock.recv(READ_SIZE):
                    connection.send(data)
            except (OSError, websockets.exceptions.ConnectionClosed):
                pass
            connection.close()

        threading.Thread(target=local_to_remote, daemon=True).start()
        try:
            for message in connection:
                if isinstance(message, str):
                    break  # the server's error envelope: nothing more will come
                sock.sendall(message)
        except (OSError, websockets.exceptions.ConnectionClosed):
            pass
        finally:
            connection.close()
            self._forget(sock)

    def _forget(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
