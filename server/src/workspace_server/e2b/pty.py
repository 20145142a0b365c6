"""envd PTYs: process.Process/Start with `pty`, SendInput(pty), Update (resize), SendSignal.
A PTY is a foreground spawn held by its Start stream; this registry finds it by pid for the
calls that follow."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request, Response
from fastapi.responses import StreamingResponse

from workspace_server.agent_link.streams import CommandEnded, CommandExit, CommandFailed, CommandOutput, CommandStream
from workspace_server.api.deps import Services
from workspace_server.e2b.errors import E2BError, end_stream, envelope
from workspace_server.e2b.messages import PtySize
from workspace_server.services.processes import RunCommand

MAX_SIDE = 1000


def registry(request: Request) -> dict[tuple[str, int], CommandStream]:
    found: dict[tuple[str, int], CommandStream] | None = getattr(request.app.state, "e2b_ptys", None)
    if found is None:
        found = request.app.state.e2b_ptys = {}
    return found


def checked(size: PtySize) -> dict[str, int]:
    if not (1 <= size.cols <= MAX_SIDE and 1 <= size.rows <= MAX_SIDE):
        raise E2BError(400, f"pty size must be 1..{MAX_SIDE} columns and rows")
    return {"cols": size.cols, "rows": size.rows}


def find(request: Request, sandbox_id: str, pid: int) -> CommandStream:
    stream = registry(request).get((sandbox_id, pid))
    if stream is None:
        raise E2BError(404, f"no PTY with pid {pid} in this sandbox")
    return stream


async def start_pty(
    request: Request, svc: Services, sandbox_id: str, command: RunCommand, size: PtySize, keepalive: float
) -> Response:
    stream, pid = await svc.processes.start(sandbox_id, command, pty=checked(size))
    ptys = registry(request)
    ptys[(sandbox_id, pid)] = stream

    async def frames() -> AsyncIterator[bytes]:
        svc.sandboxes.activity.follow(sandbox_id)
        try:
            yield envelope({"event": {"start": {"pid": pid}}})
            while True:
                try:
                    async with asyncio.timeout(keepalive):
                        event = await stream.next()
                except TimeoutError:
                    yield envelope({"event": {"keepalive": {}}})
                    continue
                if isinstance(event, CommandOutput):
                    yield envelope({"event": {"data": {"pty": base64.b64encode(event.data).decode()}}})
                elif isinstance(event, CommandExit):
                    end: dict[str, Any] = {
                        "exitCode": event.code,
                        "exited": True,
                        "status": f"exit status {event.code}",
                    }
                    yield envelope({"event": {"end": end}})
                    yield end_stream()
                    return
                elif isinstance(event, CommandFailed):
                    yield end_stream(event.error)
                    return
                elif isinstance(event, CommandEnded) or event is None:
                    yield end_stream(E2BError(503, "the agent ended the PTY stream"))
                    return
        finally:
            ptys.pop((sandbox_id, pid), None)
            svc.sandboxes.activity.unfollow(sandbox_id)
            stream.close()

    return StreamingResponse(frames(), media_type="application/connect+json")
