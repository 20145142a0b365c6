"""Builds from a Containerfile: start one (the build context is the streamed body), read its
record, follow or re-read its log (SSE, resumable by byte offset), cancel or delete it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import StringConstraints
from pydantic_core import to_json

from workspace_server.api.deps import Services, services
from workspace_server.api.errors import ERROR_RESPONSES
from workspace_server.api.schemas import BuildBody, BuildList, ShortText
from workspace_server.domain.builds import BuildState
from workspace_server.domain.errors import InvalidRequest
from workspace_server.services.builds import BuildRequest

router = APIRouter(prefix="/api/v1", tags=["builds"], responses=ERROR_RESPONSES)

CONTEXT_BODY = {
    "requestBody": {
        "required": True,
        "description": "The build context: a tar (optionally gzip-compressed) of the context directory, "
        "holding the Containerfile (see `file`); streamed, up to the server's maximum image size.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
LOG_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: `log` (id: the byte offset after it; data: {offset, end, text}), "
        "then `end` (data: the build record) once the build is over and its log was sent",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
LOG_CHUNK = 64 * 1024
MAX_PAIRS = 64  # build args and env each: the query string must fit a request line
Pair = Annotated[str, StringConstraints(max_length=1024)]


def pairs(values: list[str], field: str) -> dict[str, str]:
    result = {}
    for value in values:
        key, sep, item = value.partition("=")
        if not sep or not key:
            raise InvalidRequest(f"{field} takes KEY=value, not {value[:100]!r}", field=field)
        result[key] = item
    return result


@router.post("/templates/build", status_code=202, response_model=BuildBody, openapi_extra=CONTEXT_BODY)
async def start_build(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    name: Annotated[str, Query(min_length=1, max_length=200, description="The template to make: name[:tag]")],
    replace: Annotated[bool, Query(description="Replace an existing template of that name")] = False,
    file: Annotated[
        str | None,
        Query(
            max_length=4096,
            description="The Containerfile's path in the context (default Containerfile, then "
            "Dockerfile); a name starting with .workspace-containerfile is not part of the context",
        ),
    ] = None,
    build_arg: Annotated[list[Pair], Query(max_length=MAX_PAIRS, description="KEY=value for an ARG; repeatable")] = [],  # noqa: B006
    env: Annotated[
        list[Pair],
        Query(
            max_length=MAX_PAIRS,
            description="KEY=value in RUN steps' environment only (e.g. http_proxy), never in the image; repeatable",
        ),
    ] = [],  # noqa: B006
    timeout: Annotated[float, Query(gt=0, le=86400, description="The build's time limit in seconds")] = 3600,
    network: Annotated[bool, Query(description="Step sandboxes get network (through the egress filter)")] = False,
    cpu: Annotated[float | None, Query(description="Each step sandbox's CPU limit")] = None,
    memory_mb: Annotated[int | None, Query(description="Each step sandbox's memory limit")] = None,
    disk_mb: Annotated[int | None, Query(description="Each step sandbox's disk (bounds what one step changes)")] = None,
    description: Annotated[ShortText, Query()] = "",
) -> BuildBody:
    """Start a build: answered at once (`building`) once the Containerfile, its base and the
    context's files were checked; follow it at GET /builds/{id}/logs."""
    build = await svc.builds.submit(
        BuildRequest(
            name=name,
            replace=replace,
            file=file,
            build_args=pairs(build_arg, "build_arg"),
            env=pairs(env, "env"),
            time_limit=timeout,
            network=network,
            cpu=cpu,
            memory_mb=memory_mb,
            disk_mb=disk_mb,
            description=description,
        ),
        request.stream(),
    )
    return BuildBody.of(build)


@router.get("/builds", response_model=BuildList)
async def list_builds(svc: Annotated[Services, Depends(services)]) -> BuildList:
    return BuildList(builds=[BuildBody.of(b) for b in svc.builds.all()])


@router.get("/builds/{build_id}", response_model=BuildBody)
async def get_build(build_id: str, svc: Annotated[Services, Depends(services)]) -> BuildBody:
    return BuildBody.of(svc.builds.get(build_id))


@router.delete("/builds/{build_id}", status_code=204, response_class=Response)
async def delete_build(build_id: str, svc: Annotated[Services, Depends(services)]) -> Response:
    """Cancel a running build (its step sandbox is deleted, the record stays with error
    BUILD_CANCELLED); a finished build's record and log are removed."""
    await svc.builds.delete(build_id)
    return Response(status_code=204)


def complete_utf8(data: bytes) -> int:
    """How much of `data` ends on a character boundary (a multi-byte one may be cut)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): is its sequence complete?
            if not 0xC2 <= byte <= 0xF4:
                return len(data)  # ASCII, or no UTF-8 lead byte: nothing to wait for
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) if need <= back else len(data) - back
    return len(data)


@router.get("/builds/{build_id}/logs", response_class=StreamingResponse, responses=LOG_DOC)
async def build_logs(
    build_id: str,
    svc: Annotated[Services, Depends(services)],
    offset: Annotated[
        int | None, Query(ge=0, description="Byte offset to read from (default: Last-Event-ID, else 0)")
    ] = None,
    follow: Annotated[bool, Query(description="Keep the stream open until the build ends")] = True,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    builds = svc.builds
    builds.get(build_id)  # BUILD_NOT_FOUND before the stream starts
    if offset is None:
        offset = int(last_event_id) if last_event_id is not None and last_event_id.isdigit() else 0
    keepalive = svc.settings.keepalive_seconds

    async def frames() -> AsyncIterator[bytes]:
        position = offset
        while True:
            changed = builds.store.changed(build_id)
            build = builds.store.get(build_id)
            if build is None:
                return
            data = builds.store.read_log(build_id, position, LOG_CHUNK)
            finished = build.state != BuildState.BUILDING
            # A character cut by the end of what is written yet waits for its last bytes
            # (unless nothing more will come).
            usable = complete_utf8(data) or (len(data) if finished or not follow else 0)
            if usable:
                text = data[:usable].decode(errors="replace")
                event = to_json({"offset": position, "end": position + usable, "text": text})
                position += usable
                yield b"event: log\nid: %d\ndata: %s\n\n" % (position, event)
                continue
            if (finished or not follow) and not data:
                yield b"event: end\ndata: " + to_json(BuildBody.of(builds.get(build_id)).model_dump()) + b"\n\n"
                return
            try:
                async with asyncio.timeout(keepalive):
                    await changed.wait()
            except TimeoutError:
                yield b": keepalive\n\n"

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)
