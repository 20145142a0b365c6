# Generated from _async/pty.py by scripts/unasync.py. Do not edit: edit that file.
"""``client.pty``: interactive terminal sessions over a WebSocket.

A background reader receives frames for the whole life of a session and hands terminal
output to the ``on_data`` callbacks. It is an asyncio task in the asyncio client and a daemon
thread in the blocking client, whose callbacks therefore run on that thread.
"""

from __future__ import annotations

import builtins
import logging
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

import websockets.exceptions
from websockets.sync.client import ClientConnection

from .._exceptions import WaitTimeoutError, WorkspaceConnectionError, WorkspaceError
from .._primitives import BackgroundTask, receive_message
from .._protocol import WebSocketRequest
from .._protocol import pty as protocol
from ..types import PtyInfo, PtyOptions
from ._api_client import APIClient

logger = logging.getLogger("workspace_sdk")

DataCallback = TypeVar("DataCallback", bound=Callable[[bytes], Any])

# Output that arrives before the first on_data callback is kept (up to this much, newest
# bytes win) and handed to that callback, so a shell prompt printed right after connect is
# not lost. The server's own attach replay is 64 KiB; this leaves ample room.
PENDING_OUTPUT_LIMIT = 1024 * 1024


class PtyService:
    """Terminal sessions in a sandbox."""

    def __init__(self, api: APIClient) -> None:
        self._api = api

    def connect(self, sandbox_id: str, options: PtyOptions | None = None) -> PtyHandle:
        """Start a new terminal session and return its handle once the shell is running."""
        return self._open(protocol.open_request(sandbox_id, options), sandbox_id)

    def attach(self, sandbox_id: str, pty_id: str) -> PtyHandle:
        """Attach to a running session; the last 64 KiB of its output is replayed."""
        return self._open(protocol.attach_request(sandbox_id, pty_id), sandbox_id)

    def list(self, sandbox_id: str) -> builtins.list[PtyInfo]:
        """Live sessions in the sandbox."""
        data = self._api.request_json(protocol.list_request(sandbox_id))
        return protocol.parse_pty_list(data)

    def resize(self, sandbox_id: str, pty_id: str, cols: int, rows: int) -> None:
        """Resize a session without being attached to it."""
        self._api.request(protocol.resize_request(sandbox_id, pty_id, cols, rows))

    def kill(self, sandbox_id: str, pty_id: str) -> None:
        """Kill a session's shell without being attached to it."""
        self._api.request(protocol.kill_request(sandbox_id, pty_id))

    def _open(self, request: WebSocketRequest, sandbox_id: str) -> PtyHandle:
        connection = self._api.open_websocket(request)
        try:
            ready = self._receive_ready(connection, request)
        except BaseException:
            connection.close()
            raise
        handle = PtyHandle(self._api, connection, sandbox_id=sandbox_id, pty_id=ready.pty_id, pid=ready.pid)
        self._api.register_pty(handle)
        handle._start_reader()
        return handle

    def _receive_ready(self, connection: ClientConnection, request: WebSocketRequest) -> protocol.PtyReady:
        """The server's first frame is ``ready`` or an error (it reports errors that way
        even when they happen before the session exists)."""
        context = request.error_context
        timeout = self._api.config.timeout
        try:
            message = receive_message(connection, timeout)
        except builtins.TimeoutError as exc:
            raise WorkspaceConnectionError(
                f"no ready frame from the PTY endpoint within {timeout} s", details=dict(context)
            ) from exc
        except websockets.exceptions.ConnectionClosed as exc:
            raise protocol.close_to_exception(
                exc.rcvd.code if exc.rcvd else None, exc.rcvd.reason if exc.rcvd else None, context
            ) from exc
        frame = None if isinstance(message, bytes) else protocol.parse_server_frame(message)
        if isinstance(frame, protocol.PtyReady):
            return frame
        if isinstance(frame, protocol.PtyFailed):
            raise protocol.failure_to_exception(frame, context)
        raise WorkspaceConnectionError(f"PTY endpoint sent {message!r} instead of a ready frame", details=dict(context))


class PtyHandle:
    """One terminal session.

    Register ``on_data`` callbacks for output, ``write`` keystrokes, ``resize``, ``kill`` the
    shell, or ``close`` to detach (the shell keeps running and can be re-attached). Leaving
    the ``with`` block closes the handle; closing the client closes its handles.
    """

    def __init__(
        self,
        api: APIClient,
        connection: ClientConnection,
        *,
        sandbox_id: str,
        pty_id: str,
        pid: int,
    ) -> None:
        self._api = api
        self._connection = connection
        self.sandbox_id = sandbox_id
        self.pty_id = pty_id
        self.pid = pid
        self._callbacks: builtins.list[Callable[[bytes], Any]] = []
        self._pending_output = bytearray()
        # Reentrant: a callback may register another callback. Held while callbacks run so
        # that output is delivered in order even while on_data flushes the pending buffer.
        self._callback_lock = threading.RLock()
        self._exit_code: int | None = None
        self._error: WorkspaceError | None = None
        self._closing = False
        self._ended = False  # set by the reader when the WebSocket is gone, whoever closed it
        self._reader = BackgroundTask(self._read_frames, name=f"workspace-pty-{pty_id}")

    @property
    def exit_code(self) -> int | None:
        """The shell's exit code once it has exited, else ``None``."""
        return self._exit_code

    @property
    def closed(self) -> bool:
        """True once the session ended or the handle was closed."""
        return self._closing or self._ended

    def on_data(self, callback: DataCallback) -> DataCallback:
        """Call ``callback(data: bytes)`` with every piece of terminal output, in order.

        Output received before the first callback was registered is delivered to it at
        once, from within this call; later output comes from the background reader.
        Returns ``callback``, so this also works as a decorator.
        """
        with self._callback_lock:
            self._callbacks.append(callback)
            if len(self._callbacks) == 1 and self._pending_output:
                pending = bytes(self._pending_output)
                self._pending_output.clear()
                self._invoke(callback, pending)
        return callback

    def write(self, data: str | bytes) -> None:
        """Send keystrokes/input to the terminal (``str`` is encoded as UTF-8)."""
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        self._send(payload)

    def resize(self, cols: int, rows: int) -> None:
        """Change the terminal size."""
        self._send(protocol.resize_frame(cols, rows))

    def kill(self) -> None:
        """Kill the shell. The session then ends; ``wait()`` returns its exit code."""
        if self._exit_code is not None:
            return
        self._send(protocol.KILL_FRAME)

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait until the session ends and return the shell's exit code.

        Returns ``None`` if the handle was closed (detached) before the shell exited. Raises
        the session's error if the server ended it with one, and ``WaitTimeoutError`` if it
        is still running after ``timeout`` seconds.
        """
        if not self._reader.join(timeout):
            raise WaitTimeoutError(
                f"PTY {self.pty_id} still running after {timeout} s",
                details={"sandbox_id": self.sandbox_id, "pty_id": self.pty_id},
            )
        if self._error is not None:
            raise self._error
        return self._exit_code

    def close(self) -> None:
        """Detach: close the WebSocket and stop the reader. The shell keeps running on the
        server unless it was killed (use ``kill()`` first to end it)."""
        if not self._closing:
            self._closing = True
            try:
                self._connection.close()
            finally:
                self._api.unregister_pty(self)
        self._reader.join()

    def __enter__(self) -> PtyHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} sandbox_id={self.sandbox_id!r} pty_id={self.pty_id!r} "
            f"pid={self.pid} exit_code={self._exit_code}>"
        )

    def _start_reader(self) -> None:
        self._reader.start()

    def _send(self, message: str | bytes) -> None:
        try:
            self._connection.send(message)
        except websockets.exceptions.ConnectionClosed as exc:
            if self._error is not None:
                raise self._error from exc
            raise WorkspaceConnectionError(
                f"PTY {self.pty_id} is closed",
                details={"sandbox_id": self.sandbox_id, "pty_id": self.pty_id},
            ) from exc

    def _read_frames(self) -> None:
        # Never raises: every outcome is recorded for wait() and the reader just ends.
        context = {"sandbox_id": self.sandbox_id, "pty_id": self.pty_id}
        try:
            for message in self._connection:
                if isinstance(message, bytes):
                    self._deliver(message)
                    continue
                frame = protocol.parse_server_frame(message)
                if isinstance(frame, protocol.PtyExited):
                    self._exit_code = frame.code
                elif isinstance(frame, protocol.PtyFailed):
                    self._error = protocol.failure_to_exception(frame, context)
        except websockets.exceptions.ConnectionClosed as exc:
            if not self._closing and self._exit_code is None and self._error is None:
                self._error = protocol.close_to_exception(
                    exc.rcvd.code if exc.rcvd else None,
                    exc.rcvd.reason if exc.rcvd else None,
                    context,
                )
        except Exception as exc:  # a malformed frame: end the session, report it in wait()
            logger.warning("PTY %s reader stopped: %s", self.pty_id, exc)
            self._error = (
                exc
                if isinstance(exc, WorkspaceError)
                else WorkspaceConnectionError(f"PTY {self.pty_id} failed: {exc}", details=context)
            )
            self._connection.close()
        finally:
            self._ended = True
            self._api.unregister_pty(self)

    def _deliver(self, data: bytes) -> None:
        with self._callback_lock:
            if not self._callbacks:
                self._pending_output += data
                if len(self._pending_output) > PENDING_OUTPUT_LIMIT:
                    del self._pending_output[:-PENDING_OUTPUT_LIMIT]
                return
            for callback in builtins.list(self._callbacks):
                self._invoke(callback, data)

    def _invoke(self, callback: Callable[[bytes], Any], data: bytes) -> None:
        # A failing callback must not kill the reader (and with it the session).
        try:
            callback(data)
        except Exception:
            logger.exception("PTY %s on_data callback raised", self.pty_id)
