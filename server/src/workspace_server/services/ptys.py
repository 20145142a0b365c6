"""Interactive terminals. A PTY outlives the WebSocket that opened it: clients detach
and re-attach by id, and get the last output replayed."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from dataclasses import dataclass, field
from typing import Any

from workspace_server.agent_link.streams import CommandEnded, CommandExit, CommandOutput, CommandStream
from workspace_server.domain.errors import AgentNotConnected, InvalidRequest, PtyNotFound
from workspace_server.services.processes import ProcessService, RunCommand
from workspace_server.services.sandboxes import SandboxService

SCROLLBACK = 64 * 1024
SUBSCRIBER_QUEUE = 1024
# Output waiting for one attached client: the pump never waits for clients (the PTY's own
# output must keep flowing), so a client that reads less is detached past this many bytes.
SUBSCRIBER_BYTES = 4 * 1024 * 1024
MAX_DIMENSION = 1000

# What subscribers receive: ("data", bytes) | ("exit", int) | ("error", message)
PtyEvent = tuple[str, Any]


class SubscriberQueue(asyncio.Queue[PtyEvent]):
    """A client's queue, full at SUBSCRIBER_QUEUE events or SUBSCRIBER_BYTES of output."""

    def __init__(self) -> None:
        super().__init__(SUBSCRIBER_QUEUE)
        self.queued_bytes = 0

    def full(self) -> bool:
        return super().full() or self.queued_bytes >= SUBSCRIBER_BYTES

    def _put(self, item: PtyEvent) -> None:
        if item[0] == "data":
            self.queued_bytes += len(item[1])
        super()._put(item)

    def _get(self) -> PtyEvent:
        item: PtyEvent = super()._get()
        if item[0] == "data":
            self.queued_bytes -= len(item[1])
        return item


@dataclass
class PtySession:
    pty_id: str
    sandbox_id: str
    pid: int
    cols: int
    rows: int
    stream: CommandStream
    scrollback: bytearray = field(default_factory=bytearray)
    subscribers: set[asyncio.Queue[PtyEvent]] = field(default_factory=set)
    pump: asyncio.Task[None] | None = None

    def info(self) -> dict[str, Any]:
        return {"pty_id": self.pty_id, "pid": self.pid, "cols": self.cols, "rows": self.rows}


def check_size(cols: int, rows: int) -> None:
    if not (1 <= cols <= MAX_DIMENSION and 1 <= rows <= MAX_DIMENSION):
        raise InvalidRequest(f"cols and rows must be between 1 and {MAX_DIMENSION}", field="cols")


class PtyService:
    """Interactive terminals: each one a command on a pty whose output a pump task keeps in a
    scrollback and fans out to the attached clients."""

    def __init__(self, sandboxes: SandboxService, processes: ProcessService) -> None:
        self.sandboxes = sandboxes
        self.processes = processes
        self._sessions: dict[str, PtySession] = {}
        sandboxes.on_sandbox_gone(self._sandbox_gone)

    async def create(self, sandbox_id: str, cols: int, rows: int, shell: str | None) -> PtySession:
        check_size(cols, rows)
        command = RunCommand(command=shell or "/bin/bash", args=["-l"] if not shell else [])
        stream, pid = await self.processes.start(sandbox_id, command, pty={"cols": cols, "rows": rows})
        session = PtySession("pty-" + secrets.token_hex(6), sandbox_id, pid, cols, rows, stream)
        self._sessions[session.pty_id] = session
        session.pump = asyncio.get_running_loop().create_task(self._pump(session))
        return session

    def get(self, sandbox_id: str, pty_id: str) -> PtySession:
        self.sandboxes.record(sandbox_id)
        session = self._sessions.get(pty_id)
        if session is None or session.sandbox_id != sandbox_id:
            raise PtyNotFound(pty_id)
        return session

    def list(self, sandbox_id: str) -> list[dict[str, Any]]:
        self.sandboxes.record(sandbox_id)
        return [s.info() for s in self._sessions.values() if s.sandbox_id == sandbox_id]

    def subscribe(self, session: PtySession) -> tuple[asyncio.Queue[PtyEvent], bytes]:
        queue = SubscriberQueue()
        session.subscribers.add(queue)
        return queue, bytes(session.scrollback)

    @staticmethod
    def unsubscribe(session: PtySession, queue: asyncio.Queue[PtyEvent]) -> None:
        session.subscribers.discard(queue)

    async def write(self, session: PtySession, data: bytes) -> None:
        self.sandboxes.activity.touch(session.sandbox_id)
        with contextlib.suppress(AgentNotConnected):
            await session.stream.send_stdin(data)

    async def resize(self, session: PtySession, cols: int, rows: int) -> None:
        check_size(cols, rows)
        session.cols, session.rows = cols, rows
        with contextlib.suppress(AgentNotConnected):
            await session.stream.resize(cols, rows)

    async def kill(self, session: PtySession) -> None:
        with contextlib.suppress(AgentNotConnected):
            await session.stream.kill(9)

    async def _pump(self, session: PtySession) -> None:
        final: PtyEvent = ("error", "the pty ended without an exit status")
        try:
            while True:
                event = await session.stream.next()
                if isinstance(event, CommandOutput):
                    self.sandboxes.activity.touch(session.sandbox_id)
                    session.scrollback += event.data
                    del session.scrollback[:-SCROLLBACK]
                    self._publish(session, ("data", event.data))
                elif isinstance(event, CommandExit):
                    final = ("exit", event.code)
                    break
                elif isinstance(event, CommandEnded):
                    break
        except AgentNotConnected:
            final = ("error", "the sandbox agent disconnected")
        finally:
            self._sessions.pop(session.pty_id, None)
            session.stream.close()
            self._publish(session, final, last=True)

    @staticmethod
    def _publish(session: PtySession, event: PtyEvent, last: bool = False) -> None:
        for queue in list(session.subscribers):
            if last:
                # Room is made for the final event so a slow client still learns the end.
                while queue.full():
                    queue.get_nowait()
            try:
                queue.put_nowait(event)
            except asyncio.QueueFull:
                # A client this far behind is dropped; it can re-attach and get the scrollback.
                session.subscribers.discard(queue)
                queue.get_nowait()
                queue.put_nowait(("error", "client too slow: detached; re-attach to continue"))

    def _sandbox_gone(self, sandbox_id: str) -> None:
        for session in [s for s in self._sessions.values() if s.sandbox_id == sandbox_id]:
            self._sessions.pop(session.pty_id, None)
            if session.pump is not None:
                session.pump.cancel()
