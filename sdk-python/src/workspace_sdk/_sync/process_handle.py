# Generated from _async/process_handle.py by scripts/unasync.py. Do not edit: edit that file.
"""``ProcessHandle``: a background process, followed by output offset.

The process belongs to the sandbox, not to this object: closing, disconnecting or losing
the connection only stops following it. Iterating the handle replays the output kept from
``offset`` and follows it live; every event moves ``offset`` past the bytes it delivered,
so following again (after a disconnect, a dropped connection or a server restart, even
from another client through ``client.process.connect``) misses nothing and repeats nothing.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import TypeAlias

from .. import types as sdk_types
from .._exceptions import (
    AgentNotConnectedError,
    WaitTimeoutError,
    WorkspaceConnectionError,
    WorkspaceError,
    error_from_envelope,
)
from .._primitives import sleep, upload_chunks
from .._protocol import ApiRequest
from .._protocol import process as protocol
from .._protocol._common import invalid_response
from .._sse import ServerSentEvent, SSEDecoder
from ..types import (
    DroppedEvent,
    ErrorEvent,
    ExitEvent,
    ProcessInfo,
    ProcessOutputEvent,
    StderrEvent,
    StdoutEvent,
)
from ._api_client import APIClient
from ._streaming import ResponseStream

StdinContent: TypeAlias = "str | sdk_types.FileContent"
"""What ``send_stdin`` takes: text (sent as UTF-8), bytes, a binary file, or chunks of bytes."""

STDIN_CHUNK_SIZE = 256 * 1024
# How long a follower keeps trying to resume after its connection broke (a server restart,
# an agent link being re-established) before it gives up and raises.
RESUME_WINDOW = 60.0
RESUME_BACKOFF = (0.05, 0.1, 0.2, 0.5, 1.0)
TRANSIENT_CODES = frozenset({"AGENT_NOT_CONNECTED", "SHUTTING_DOWN"})


class ProcessHandle:
    """A background process started with ``client.process.start`` or found again with
    ``client.process.connect``.

    ``for event in handle`` yields ``StdoutEvent``/``StderrEvent`` (with their output
    offsets), ``DroppedEvent`` (bytes no longer kept: also first, when the replay cannot
    begin at the requested offset), and ends with ``ExitEvent`` (or ``ErrorEvent``). A
    broken connection is resumed at ``offset`` by itself. ``disconnect()`` (or leaving
    ``with``) stops following; the process keeps running.
    """

    def __init__(self, api: APIClient, sandbox_id: str, info: ProcessInfo, offset: int = 0) -> None:
        self._api = api
        self.sandbox_id = sandbox_id
        self.pid = info.pid
        self.tag = info.tag
        self.command = info.command
        self._offset = offset
        self._exit = protocol.exit_of(info)
        self._follower: OutputStream | None = None
        self._disconnected = False

    @property
    def offset(self) -> int:
        """The output offset following resumes at: just past the last byte delivered."""
        return self._offset

    @property
    def exit_code(self) -> int | None:
        """The exit code once the process is known to have exited, else ``None``."""
        return self._exit.code if self._exit is not None else None

    def info(self) -> ProcessInfo:
        """The process's current state (``ProcessInfo``)."""
        data = self._api.request_json(protocol.info_request(self.sandbox_id, self.pid))
        info = protocol.parse_process_info(data)
        self._exit = self._exit or protocol.exit_of(info)
        return info

    def send_stdin(self, data: StdinContent) -> None:
        """Write to the process's stdin (``str`` is encoded as UTF-8). Large inputs, file
        objects and iterables of bytes are streamed, as fast as the process reads them.

        Raises ``StdinClosedError`` if the process was started without ``stdin=True``, its
        stdin was closed, or it exited."""
        _send_stdin(self._api, self.sandbox_id, self.pid, data)

    def close_stdin(self) -> None:
        """Close the process's stdin: it reads EOF once it has read what was sent."""
        self._api.request(protocol.close_stdin_request(self.sandbox_id, self.pid))

    def kill(self, signal: int = 15) -> None:
        """Send ``signal`` (default SIGTERM) to the process's process group."""
        self._api.request(protocol.kill_request(self.sandbox_id, self.pid, signal))

    def wait(self, timeout: float | None = None) -> ExitEvent:
        """Wait until the process exits and return its ``ExitEvent`` (code, signal,
        finished_at). Raises ``WaitTimeoutError`` if it still runs after ``timeout`` s."""
        if self._exit is not None:
            return self._exit
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = protocol.MAX_WAIT_SLICE if deadline is None else max(0.0, deadline - time.monotonic())
            request = protocol.wait_request(self.sandbox_id, self.pid, remaining)
            data = self._api.request_json(
                request, timeout=self._api.config.command_timeout(min(remaining, protocol.MAX_WAIT_SLICE))
            )
            exited = protocol.exit_of(protocol.parse_process_info(data))
            if exited is not None:
                self._exit = exited
                return exited
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeoutError(
                    f"process {self.pid} still running after {timeout} s",
                    details={"sandbox_id": self.sandbox_id, "pid": self.pid},
                )

    def disconnect(self) -> None:
        """Stop following the output (the process keeps running). Iterating again later
        resumes at ``offset``."""
        self._disconnected = True
        follower, self._follower = self._follower, None
        if follower is not None:
            follower.close()

    def __iter__(self) -> Iterator[ProcessOutputEvent]:
        self._disconnected = False
        return self._follow()

    def _follow(self) -> Iterator[ProcessOutputEvent]:
        failures = 0
        resume_deadline: float | None = None
        while not self._disconnected:
            follower = OutputStream(
                self._api, protocol.output_request(self.sandbox_id, self.pid, self._offset), pid=self.pid
            )
            self._follower = follower
            try:
                for event in follower:
                    if isinstance(event, protocol.OutputStarted):
                        if event.offset > self._offset:
                            # The log wrapped: the replay begins later than asked.
                            yield DroppedEvent(offset=self._offset, end=event.offset)
                        self._offset = event.offset
                        continue
                    failures, resume_deadline = 0, None
                    if isinstance(event, (StdoutEvent, StderrEvent, DroppedEvent)):
                        self._offset = event.end if event.end is not None else self._offset
                    elif isinstance(event, ExitEvent):
                        self._exit = event
                        self._offset = event.end if event.end is not None else self._offset
                        yield event
                        return
                    elif isinstance(event, ErrorEvent):
                        if event.code in TRANSIENT_CODES:
                            raise error_from_envelope(
                                {"code": event.code, "message": event.message},
                                context={"sandbox_id": self.sandbox_id, "pid": self.pid},
                            )
                        yield event
                        return
                    yield event
                if self._disconnected or follower.closed_by_caller:
                    return
                raise WorkspaceConnectionError(
                    f"output stream of process {self.pid} ended without an exit event",
                    details={"sandbox_id": self.sandbox_id, "pid": self.pid},
                )
            except WorkspaceError as exc:
                if self._disconnected:
                    return
                if not _transient(exc):
                    raise
                now = time.monotonic()
                resume_deadline = resume_deadline or now + max(RESUME_WINDOW, self._api.config.timeout)
                if now >= resume_deadline:
                    raise
                sleep(RESUME_BACKOFF[min(failures, len(RESUME_BACKOFF) - 1)])
                failures += 1
            finally:
                follower.close()
                if self._follower is follower:
                    self._follower = None

    def __enter__(self) -> ProcessHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.disconnect()

    def __repr__(self) -> str:
        state = "running" if self._exit is None else f"exited({self._exit.code})"
        return (
            f"<{type(self).__name__} sandbox_id={self.sandbox_id!r} pid={self.pid} tag={self.tag!r} "
            f"offset={self._offset} {state}>"
        )


def _transient(exc: WorkspaceError) -> bool:
    return isinstance(exc, (WorkspaceConnectionError, AgentNotConnectedError)) or exc.code in TRANSIENT_CODES


def _send_stdin(api: APIClient, sandbox_id: str, pid_or_tag: int | str, data: StdinContent) -> None:
    content: bytes | Iterator[bytes]
    if isinstance(data, str):
        content = data.encode("utf-8")
    elif isinstance(data, (bytes, bytearray, memoryview)):
        content = bytes(data)
    else:
        content = upload_chunks(data, STDIN_CHUNK_SIZE)
    api.request(
        protocol.stdin_request(sandbox_id, pid_or_tag),
        content=content,
        headers={"Content-Type": "application/octet-stream"},
    )


class OutputStream(ResponseStream):
    """One connection to a background process's output route (the handle makes a new one
    to resume); yields the ``start`` marker and the events as they come."""

    def __init__(self, api: APIClient, request: ApiRequest, *, pid: int) -> None:
        super().__init__(api, request, api.config.stream_timeout())
        self.pid = pid
        self._decoder = SSEDecoder()
        self._pending: deque[ServerSentEvent] = deque()
        self.closed_by_caller = False

    def close(self) -> None:
        if self._response is not None:
            self.closed_by_caller = True
        super().close()

    def __iter__(self) -> Iterator[protocol.OutputStarted | ProcessOutputEvent]:
        return self._events()

    def _events(self) -> Iterator[protocol.OutputStarted | ProcessOutputEvent]:
        self._open_response()
        first = True
        while True:
            while not self._pending:
                try:
                    chunk = self._read_chunk()
                except Exception:
                    if self.closed_by_caller:  # disconnect() closed the response under us
                        return
                    raise
                if chunk is None:
                    return
                self._pending.extend(self._decoder.feed(chunk))
            event = protocol.parse_output_event(self._pending.popleft())
            if event is None:
                continue
            if first and not isinstance(event, protocol.OutputStarted):
                raise invalid_response(f"output stream began with {event!r} instead of a start event")
            first = False
            yield event
