from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic_core import to_json

from workspace_server.api.deps import Services, services
from workspace_server.api.errors import ERROR_RESPONSES
from workspace_server.api.routes.processes import SSE_HEADERS, sse
from workspace_server.api.schemas import (
    CopyBody,
    ExistsBody,
    FileInfoBody,
    FileList,
    MkdirBody,
    MoveBody,
)
from workspace_server.domain.errors import WorkspaceError
from workspace_server.services.files import BoundedListing

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1/sandboxes/{sandbox_id}/files", tags=["files"], responses=ERROR_RESPONSES)
PathQuery = Annotated[str, Query(min_length=1, max_length=4096, description="Absolute path inside the sandbox")]

DOWNLOAD_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}
WATCH_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: ready, create, write, remove, rename, chmod, overflow, error",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}
UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.get("", response_class=StreamingResponse, responses=DOWNLOAD_DOC)
async def read_file(sandbox_id: str, path: PathQuery, svc: Annotated[Services, Depends(services)]) -> StreamingResponse:
    size, chunks = await svc.files.read(sandbox_id, path)
    return StreamingResponse(chunks, media_type="application/octet-stream", headers={"Content-Length": str(size)})


@router.put("", response_model=FileInfoBody, openapi_extra=UPLOAD_BODY)
async def write_file(
    sandbox_id: str, path: PathQuery, request: Request, svc: Annotated[Services, Depends(services)]
) -> FileInfoBody:
    info = await svc.files.write(sandbox_id, path, request.stream(), svc.settings.max_upload_bytes)
    return FileInfoBody(**info)


@router.delete("", status_code=204, response_class=Response)
async def remove_file(
    sandbox_id: str, path: PathQuery, svc: Annotated[Services, Depends(services)], recursive: bool = False
) -> Response:
    await svc.files.remove(sandbox_id, path, recursive)
    return Response(status_code=204)


@router.get("/list", response_model=FileList)
async def list_files(sandbox_id: str, path: PathQuery, svc: Annotated[Services, Depends(services)]) -> Response:
    listing = await svc.files.list(sandbox_id, path, svc.settings.max_list_entries)
    return StreamingResponse(file_list_json(listing), media_type="application/json")


LIST_PIECE = 64 * 1024


async def file_list_json(listing: BoundedListing) -> AsyncIterator[bytes]:
    """The FileList document, entry by entry as the agent sends them (flow-controlled end to
    end: a slow client holds up the agent, not the server's memory). A listing that fails
    once the response has begun still ends as valid JSON: `truncated` and the `error`."""
    piece = bytearray(b'{"files":[')
    separator = b""
    error: dict[str, str] | None = None
    try:
        async for entry in listing.entries():
            piece += separator
            piece += to_json(entry)
            separator = b","
            if len(piece) >= LIST_PIECE:
                yield bytes(piece)
                piece.clear()
    except WorkspaceError as exc:
        log.warning("directory listing cut short: %s", exc.message)
        error = {"code": exc.code, "message": exc.message}
    finally:
        listing.close()
    piece += b'],"truncated":' + (b"true" if listing.truncated or error else b"false")
    if error is not None:
        piece += b',"error":' + to_json(error)
    yield bytes(piece + b"}")


@router.get("/stat", response_model=FileInfoBody)
async def stat_file(sandbox_id: str, path: PathQuery, svc: Annotated[Services, Depends(services)]) -> FileInfoBody:
    return FileInfoBody(**await svc.files.stat(sandbox_id, path))


@router.get("/exists", response_model=ExistsBody)
async def file_exists(sandbox_id: str, path: PathQuery, svc: Annotated[Services, Depends(services)]) -> ExistsBody:
    return ExistsBody(exists=await svc.files.exists(sandbox_id, path))


@router.post("/mkdir", response_model=FileInfoBody)
async def make_directory(sandbox_id: str, body: MkdirBody, svc: Annotated[Services, Depends(services)]) -> FileInfoBody:
    return FileInfoBody(**await svc.files.mkdir(sandbox_id, body.path, body.recursive))


@router.post("/move", response_model=FileInfoBody)
async def move_file(sandbox_id: str, body: MoveBody, svc: Annotated[Services, Depends(services)]) -> FileInfoBody:
    return FileInfoBody(**await svc.files.move(sandbox_id, body.source, body.destination))


@router.post("/copy", response_model=FileInfoBody)
async def copy_file(sandbox_id: str, body: CopyBody, svc: Annotated[Services, Depends(services)]) -> FileInfoBody:
    return FileInfoBody(**await svc.files.copy(sandbox_id, body.source, body.destination, body.recursive))


@router.get("/watch", response_class=StreamingResponse, responses=WATCH_DOC)
async def watch_files(
    sandbox_id: str, path: PathQuery, svc: Annotated[Services, Depends(services)], recursive: bool = False
) -> StreamingResponse:
    events = await svc.watches.watch(sandbox_id, path, recursive, svc.settings.keepalive_seconds)

    async def frames() -> AsyncIterator[bytes]:
        async for event in events:
            yield sse(event)

    return StreamingResponse(frames(), media_type="text/event-stream", headers=SSE_HEADERS)
