from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response, WebSocket, WebSocketDisconnect

from workspace_server.api.deps import Services, current_services, services
from workspace_server.api.errors import ERROR_RESPONSES
from workspace_server.api.schemas import PtyList, ResizeBody
from workspace_server.domain.errors import InvalidRequest, WorkspaceError
from workspace_server.services.ptys import PtySession

router = APIRouter(prefix="/api/v1/sandboxes/{sandbox_id}/pty", tags=["pty"], responses=ERROR_RESPONSES)
socket_router = APIRouter(prefix="/api/v1/sandboxes/{sandbox_id}/pty")


def close_code(error: WorkspaceError) -> int:
    if error.code.endswith("NOT_FOUND") and error.code != "COMMAND_NOT_FOUND":
        return 4404
    return {
        "UNAUTHORIZED": 4401,
        "AGENT_NOT_CONNECTED": 4503,
        "SANDBOX_NOT_RUNNING": 4409,
        "INVALID_REQUEST": 4400,
        "COMMAND_NOT_FOUND": 4400,
    }.get(error.code, 4500)


async def send_error(websocket: WebSocket, error: WorkspaceError) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_text(
            json.dumps({"type": "error", "code": error.code, "message": error.message, "details": error.details})
        )
        await websocket.close(close_code(error))


def int_param(websocket: WebSocket, name: str, default: int) -> int:
    raw = websocket.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidRequest(f"{name} must be an integer", field=name) from None


@socket_router.websocket("")
async def open_pty(websocket: WebSocket, sandbox_id: str) -> None:
    svc = current_services(websocket)
    await websocket.accept()
    try:
        cols, rows = int_param(websocket, "cols", 80), int_param(websocket, "rows", 24)
        shell = websocket.query_params.get("shell") or None
        session = await svc.ptys.create(sandbox_id, cols, rows, shell)
    except WorkspaceError as error:
        await send_error(websocket, error)
        return
    await serve(websocket, svc, session, replay=False)


@socket_router.websocket("/{pty_id}")
async def attach_pty(websocket: WebSocket, sandbox_id: str, pty_id: str) -> None:
    svc = current_services(websocket)
    await websocket.accept()
    try:
        session = svc.ptys.get(sandbox_id, pty_id)
    except WorkspaceError as error:
        await send_error(websocket, error)
        return
    await serve(websocket, svc, session, replay=True)


async def serve(websocket: WebSocket, svc: Services, session: PtySession, replay: bool) -> None:
    queue, scrollback = svc.ptys.subscribe(session)
    try:
        await websocket.send_text(json.dumps({"type": "ready", **session.info()}))
        if replay and scrollback:
            await websocket.send_bytes(scrollback)
        to_client = asyncio.ensure_future(_to_client(websocket, queue))
        from_client = asyncio.ensure_future(_from_client(websocket, svc, session))
        _, pending = await asyncio.wait({to_client, from_client}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        svc.ptys.unsubscribe(session, queue)


async def _to_client(websocket: WebSocket, queue: asyncio.Queue[tuple[str, Any]]) -> None:
    while True:
        kind, value = await queue.get()
        if kind == "data":
            await websocket.send_bytes(value)
        elif kind == "exit":
            await websocket.send_text(json.dumps({"type": "exit", "code": value}))
            await websocket.close(1000)
            return
        else:
            await websocket.send_text(json.dumps({"type": "error", "code": "AGENT_NOT_CONNECTED", "message": value}))
            await websocket.close(4503)
            return


async def _from_client(websocket: WebSocket, svc: Services, session: PtySession) -> None:
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("bytes") is not None:
            await svc.ptys.write(session, message["bytes"])
            continue
        try:
            control = json.loads(message.get("text") or "")
            kind = control.get("type")
            if kind == "resize":
                await svc.ptys.resize(session, int(control["cols"]), int(control["rows"]))
            elif kind == "kill":
                await svc.ptys.kill(session)
            elif kind == "input":
                await svc.ptys.write(session, str(control["data"]).encode())
            else:
                raise InvalidRequest(f"unknown control message type {kind!r}")
        except (ValueError, KeyError, TypeError, AttributeError, WorkspaceError) as exc:
            error = exc if isinstance(exc, WorkspaceError) else InvalidRequest(f"malformed control message: {exc}")
            await websocket.send_text(json.dumps({"type": "error", "code": error.code, "message": error.message}))


@router.get("", response_model=PtyList)
async def list_ptys(sandbox_id: str, svc: Annotated[Services, Depends(services)]) -> PtyList:
    return PtyList.model_validate({"ptys": svc.ptys.list(sandbox_id)})


@router.post("/{pty_id}/resize", status_code=204, response_class=Response)
async def resize_pty(
    sandbox_id: str, pty_id: str, body: ResizeBody, svc: Annotated[Services, Depends(services)]
) -> Response:
    await svc.ptys.resize(svc.ptys.get(sandbox_id, pty_id), body.cols, body.rows)
    return Response(status_code=204)


@router.post("/{pty_id}/kill", status_code=204, response_class=Response)
async def kill_pty(sandbox_id: str, pty_id: str, svc: Annotated[Services, Depends(services)]) -> Response:
    await svc.ptys.kill(svc.ptys.get(sandbox_id, pty_id))
    return Response(status_code=204)
