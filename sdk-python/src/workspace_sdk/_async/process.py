"""``client.process``: run commands, stream their output, list and signal them; start
background processes and follow them by output offset (``process_handle.py``)."""

from __future__ import annotations

import builtins
from collections import deque
from collections.abc import AsyncIterator

from .._exceptions import WorkspaceConnectionError
from .._protocol import ApiRequest
from .._protocol import process as protocol
from .._protocol._common import invalid_response
from .._sse import ServerSentEvent, SSEDecoder
from ..types import (
    CommandResult,
    ErrorEvent,
    ExitEvent,
    ProcessEvent,
    ProcessInfo,
    RunCommandOptions,
)
from ._api_client import AsyncAPIClient
from ._streaming import AsyncResponseStream
from .process_handle import AsyncProcessHandle, StdinContent, _send_stdin


class AsyncProcessService:
    """Run commands inside a sandbox. Commands run directly (no shell): pass arguments in
    ``RunCommandOptions.args``, or run ``"sh"`` with ``args=["-c", "..."]`` for shell syntax."""

    def __init__(self, api: AsyncAPIClient) -> None:
        self._api = api

    async def run(self, sandbox_id: str, command: str, options: RunCommandOptions | None = None) -> CommandResult:
        """Run ``command`` to completion and return its exit code and output.

        A non-zero exit code is a normal result, not an exception. If
        ``options.timeout`` fires, the server kills the command and this raises
        ``ProcessTimeoutError`` (its ``stdout``/``stderr`` hold the partial output). The HTTP
        request is allowed to last at least that long, whatever the client timeout.
        """
        command_timeout = options.timeout if options else None
        data = await self._api.request_json(
            protocol.run_request(sandbox_id, command, options),
            timeout=self._api.config.command_timeout(command_timeout),
        )
        return protocol.parse_command_result(data)

    def run_stream(self, sandbox_id: str, command: str, options: RunCommandOptions | None = None) -> AsyncProcessStream:
        """Start ``command`` and stream its output as events.

        Returns at once; the request is sent when the stream is entered or first iterated::

            async with client.process.run_stream(sandbox_id, "make") as stream:
                print("pid", stream.pid)
                async for event in stream:
                    ...

        Iteration yields ``StdoutEvent``/``StderrEvent`` and ends after the final
        ``ExitEvent`` or ``ErrorEvent``. Closing the stream early (leaving the block,
        ``break``, ``aclose()``) disconnects, and the server then kills the process.
        """
        return AsyncProcessStream(
            self._api,
            protocol.stream_request(sandbox_id, command, options),
            sandbox_id=sandbox_id,
            command=command,
        )

    async def kill(self, sandbox_id: str, pid: int | str, signal: int = 15) -> None:
        """Send ``signal`` (default SIGTERM) to a process started through the API, by pid or
        by a background process's tag (its whole process group gets it)."""
        await self._api.request(protocol.kill_request(sandbox_id, pid, signal))

    async def list(self, sandbox_id: str) -> builtins.list[ProcessInfo]:
        """Running processes that were started through the API (PTY shells included), and
        background processes that exited recently (``state == "exited"``)."""
        data = await self._api.request_json(protocol.list_request(sandbox_id))
        return protocol.parse_process_list(data)

    async def start(
        self,
        sandbox_id: str,
        command: str,
        options: RunCommandOptions | None = None,
        tag: str | None = None,
        stdin: bool = False,
        log_bytes: int | None = None,
    ) -> AsyncProcessHandle:
        """Start ``command`` as a background process and return its handle as soon as it runs.

        It runs until it exits or is killed: no connection holds it, so a client that
        disconnects (or a server restart) never stops it. Its stdout and stderr are kept
        on the sandbox's disk (the most recent ``log_bytes``, 16 MiB by default), so the
        output can be replayed from any offset later (``client.process.connect``).

        ``tag`` names it uniquely among the sandbox's running processes (``TagInUseError``
        otherwise). With ``stdin=True`` its stdin stays open for ``send_stdin`` until
        ``close_stdin``; without it, stdin is ``/dev/null``. ``options`` apply as for
        ``run``; ``options.stdin`` text is written and stdin then closed.
        """
        text_stdin = options.stdin if options is not None else None
        request = protocol.start_request(sandbox_id, command, options, tag, stdin or text_stdin is not None, log_bytes)
        info = protocol.parse_process_info(await self._api.request_json(request))
        handle = AsyncProcessHandle(self._api, sandbox_id, info)
        if text_stdin is not None:
            await handle.send_stdin(text_stdin)
            await handle.close_stdin()
        return handle

    async def connect(self, sandbox_id: str, pid_or_tag: int | str, offset: int = 0) -> AsyncProcessHandle:
        """A handle on a background process, by pid or tag, that follows its output from
        ``offset`` (0: everything still kept; negative: that many bytes before the end).

        Works from any client, after disconnects and server restarts. Raises
        ``ProcessNotFoundError`` if no such process is running or retained."""
        info = await self.get(sandbox_id, pid_or_tag)
        if offset < 0:
            offset = max(info.output_start or 0, (info.output_end or 0) + offset)
        return AsyncProcessHandle(self._api, sandbox_id, info, offset=offset)

    async def get(self, sandbox_id: str, pid_or_tag: int | str) -> ProcessInfo:
        """One process, by pid or tag."""
        data = await self._api.request_json(protocol.info_request(sandbox_id, pid_or_tag))
        return protocol.parse_process_info(data)

    async def send_stdin(self, sandbox_id: str, pid_or_tag: int | str, data: StdinContent) -> None:
        """Write to a background process's stdin (see ``ProcessHandle.send_stdin``)."""
        await _send_stdin(self._api, sandbox_id, pid_or_tag, data)

    async def close_stdin(self, sandbox_id: str, pid_or_tag: int | str) -> None:
        """Close a background process's stdin (EOF once it has read what was sent)."""
        await self._api.request(protocol.close_stdin_request(sandbox_id, pid_or_tag))


class AsyncProcessStream(AsyncResponseStream):
    """Live output of one process: iterate it for events (once), or enter it with ``async with``
    to control when the connection closes. ``pid`` is known once started."""

    def __init__(self, api: AsyncAPIClient, request: ApiRequest, *, sandbox_id: str, command: str) -> None:
        super().__init__(api, request, api.config.stream_timeout())
        self.sandbox_id = sandbox_id
        self.command = command
        self._decoder = SSEDecoder()
        self._pending: deque[ServerSentEvent] = deque()
        self._pid: int | None = None
        self._finished = False

    @property
    def pid(self) -> int:
        """The process id inside the sandbox (usable with ``client.process.kill``)."""
        if self._pid is None:
            raise RuntimeError(
                "the process has not started yet: enter the stream with `async with`, "
                "iterate it, or call `await stream.start()` first"
            )
        return self._pid

    async def start(self) -> int:
        """Send the request if needed and wait for the process to start; returns its pid.

        Raises the same exceptions as ``run`` if the command cannot start.
        """
        if self._pid is not None:
            return self._pid
        try:
            await self._open_response()
            first = await self._next_event()
        except BaseException:
            await self.aclose()
            raise
        if isinstance(first, protocol.ProcessStarted):
            self._pid = first.pid
            return first.pid
        await self.aclose()
        context = {"sandbox_id": self.sandbox_id, "command": self.command}
        if isinstance(first, ErrorEvent):
            raise protocol.error_event_to_exception(first, context)
        if first is None:
            raise WorkspaceConnectionError(
                f"process stream for {self.command!r} ended before the process started",
                details=context,
            )
        raise invalid_response(f"process stream began with {first!r} instead of a start event")

    async def _enter(self) -> None:
        await self.start()

    async def _next_event(self) -> protocol.ProcessStarted | ProcessEvent | None:
        """Next known event, or ``None`` when the body ends."""
        while True:
            while not self._pending:
                chunk = await self._read_chunk()
                if chunk is None:
                    return None
                self._pending.extend(self._decoder.feed(chunk))
            event = protocol.parse_stream_event(self._pending.popleft())
            if event is not None:
                return event

    def __aiter__(self) -> AsyncIterator[ProcessEvent]:
        return self._iterate_events()

    async def _iterate_events(self) -> AsyncIterator[ProcessEvent]:
        # The finally clause runs on normal end, on error, and when a caller's `break`
        # drops this generator, so the HTTP response is never left open.
        try:
            await self.start()
            while not self._finished:
                event = await self._next_event()
                if event is None and self.closed:
                    return  # closed by the caller (e.g. iterated again after leaving `async with`)
                if event is None:
                    raise WorkspaceConnectionError(
                        f"output stream of process {self._pid} ended without an exit event",
                        details={"sandbox_id": self.sandbox_id, "pid": self._pid},
                    )
                if isinstance(event, protocol.ProcessStarted):
                    continue
                if isinstance(event, (ExitEvent, ErrorEvent)):
                    # Release the connection before handing out the last event: callers
                    # usually `break` on it, and must not depend on cleanup timing then.
                    self._finished = True
                    await self.aclose()
                yield event
        finally:
            await self.aclose()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("running" if self._pid is not None else "new")
        return (
            f"<{type(self).__name__} sandbox_id={self.sandbox_id!r} command={self.command!r} pid={self._pid} {state}>"
        )
