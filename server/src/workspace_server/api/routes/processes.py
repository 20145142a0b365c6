from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Coroutine
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic_core import to_json

from workspace_server.api.deps import Services, services
from workspace_server.api.errors import ERROR_RESPONSES
from workspace_server.api.schemas import (
    CommandResultBody,
    KillBody,
    ProcessInfo,
    ProcessList,
    RunCommandBody,
    StartProcessBody,
)
from workspace_server.domain.errors import InvalidRequest
from workspace_server.services.background import StartCommand
from workspace_server.services.event_streams import ProcessEvent
from workspace_server.services.processes import RunCommand

router = APIRouter(prefix="/api/v1/sandboxes/{sandbox_id}/processes", tags=["processes"], responses=ERROR_RESPONSES)
T = TypeVar("T")

SSE_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: start, stdout, stderr, exit, error",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
OUTPUT_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: start, stdout, stderr, dropped, exit, error (docs/api.md)",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
STDIN_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def until_disconnect(request: Request, work: Coroutine[Any, Any, T]) -> T:
    """Run `work`, cancelling it if the client goes away (which kills the command)."""
    task: asyncio.Task[T] = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if not task.done():
        task.cancel()
        raise InvalidRequest("the client disconnected; the command was killed")
    return task.result()


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def sse(event: ProcessEvent | None) -> bytes:
    if event is None:
        return b": keepalive\n\n"
    # pydantic-core's encoder: about 5x the stdlib's on large output events (the hot path).
    # Its JSON is compact and UTF-8, and escapes every control character, so it is one line.
    data = to_json(event.data)
    if "end" in event.data and event.type in ("stdout", "stderr"):  # background output: where to resume
        return b"".join((b"event: ", event.type.encode(), b"\nid: %d\ndata: " % event.data["end"], data, b"\n\n"))
    return b"".join((b"event: ", event.type.encode(), b"\ndata: ", data, b"\n\n"))


def command_of(body: RunCommandBody) -> RunCommand:
    return RunCommand(**body.model_dump())


@router.post("/run", response_model=CommandResultBody)
async def run_command(
    sandbox_id: str, body: RunCommandBody, request: Request, svc: Annotated[Services, Depends(services)]
) -> Response:
    result = await until_disconnect(
        request, svc.processes.run(sandbox_id, command_of(body), svc.settings.max_run_output)
    )
    # The output is JSON already (encoded once, bounded as encoded): small results go out in
    # one piece (the hot path), large ones in slices so that no copy of them is ever made.
    pieces = result.body()
    length = sum(len(piece) for piece in pieces)
    if length <= SMALL_RESPONSE:
        return Response(b"".join(pieces), media_type="application/json")
    return StreamingResponse(sliced(pieces), media_type="application/json", headers={"Content-Length": str(length)})


SMALL_RESPONSE = 1024 * 1024
RESPONSE_SLICE = 256 * 1024


async def sliced(pieces: list[bytes | bytearray]) -> AsyncIterator[bytes]:
    for piece in pieces:
        view = memoryview(piece)
        for start in range(0, len(view), RESPONSE_SLICE):
            yield bytes(view[start : start + RESPONSE_SLICE])


@router.post("/stream", response_class=StreamingResponse, responses=SSE_DOC)
async def stream_command(
    sandbox_id: str, body: RunCommandBody, svc: Annotated[Services, Depends(services)]
) -> StreamingResponse:
    _, events = await svc.processes.stream(sandbox_id, command_of(body), svc.settings.keepalive_seconds)

    async def frames() -> AsyncIterator[bytes]:
        async for event in events:
            yield sse(event)

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.get("", response_model=ProcessList)
async def list_processes(sandbox_id: str, svc: Annotated[Services, Depends(services)]) -> ProcessList:
    return ProcessList(processes=[ProcessInfo(**p) for p in await svc.processes.list(sandbox_id)])


@router.post("", status_code=201, response_model=ProcessInfo)
async def start_process(
    sandbox_id: str, body: StartProcessBody, svc: Annotated[Services, Depends(services)]
) -> ProcessInfo:
    fields = body.model_dump()
    start = StartCommand(
        command=RunCommand(**{k: fields.pop(k) for k in ("command", "args", "env", "cwd", "timeout", "user")}), **fields
    )
    return ProcessInfo(**await svc.background.start(sandbox_id, start))


@router.get("/{pid_or_tag}", response_model=ProcessInfo)
async def get_process(sandbox_id: str, pid_or_tag: str, svc: Annotated[Services, Depends(services)]) -> ProcessInfo:
    return ProcessInfo(**await svc.background.info(sandbox_id, pid_or_tag))


@router.get("/{pid_or_tag}/output", response_class=StreamingResponse, responses=OUTPUT_DOC)
async def follow_output(
    sandbox_id: str,
    pid_or_tag: str,
    svc: Annotated[Services, Depends(services)],
    offset: Annotated[int | None, Query(description="Output offset to replay from; negative: from the end")] = None,
    last_event_id: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> StreamingResponse:
    if offset is None:
        offset = int(last_event_id) if last_event_id and last_event_id.isdigit() else 0
    events = await svc.background.follow(sandbox_id, pid_or_tag, offset, svc.settings.keepalive_seconds)

    async def frames() -> AsyncIterator[bytes]:
        async for event in events:
            yield sse(event)

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/{pid_or_tag}/wait", response_model=ProcessInfo)
async def wait_process(
    sandbox_id: str,
    pid_or_tag: str,
    request: Request,
    svc: Annotated[Services, Depends(services)],
    timeout: Annotated[float, Query(ge=0, le=60)] = 30.0,
) -> ProcessInfo:
    return ProcessInfo(**await until_disconnect(request, svc.background.wait(sandbox_id, pid_or_tag, timeout)))


@router.post("/{pid_or_tag}/stdin", status_code=204, response_class=Response, openapi_extra=STDIN_BODY)
async def send_stdin(
    sandbox_id: str, pid_or_tag: str, request: Request, svc: Annotated[Services, Depends(services)]
) -> Response:
    await svc.background.send_stdin(sandbox_id, pid_or_tag, request.stream())
    return Response(status_code=204)


@router.post("/{pid_or_tag}/stdin/close", status_code=204, response_class=Response)
async def close_stdin(sandbox_id: str, pid_or_tag: str, svc: Annotated[Services, Depends(services)]) -> Response:
    await svc.background.close_stdin(sandbox_id, pid_or_tag)
    return Response(status_code=204)


@router.post("/{pid_or_tag}/kill", status_code=204, response_class=Response)
async def kill_process(
    sandbox_id: str, pid_or_tag: str, svc: Annotated[Services, Depends(services)], body: KillBody | None = None
) -> Response:
    await svc.background.kill(sandbox_id, pid_or_tag, (body or KillBody()).signal)
    return Response(status_code=204)
