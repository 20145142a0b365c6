"""envd, E2B's in-sandbox daemon, as seen by the SDK: Connect RPC (JSON codec, HTTP/1.1) for
process.Process and filesystem.Filesystem, `GET/POST /files`, `/health`. The sandbox comes from
the E2b-Sandbox-Id header; X-Access-Token must be the token its create returned."""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from workspace_server.api.deps import Services, services
from workspace_server.domain.errors import WorkspaceError
from workspace_server.e2b.control import PREFIX, tokens
from workspace_server.e2b.errors import E2BError, connect_error, end_stream, envelope, translate
from workspace_server.e2b.messages import (
    FILE_TYPES,
    SIGNAL_NAMES,
    SIGNALS,
    ListDirRequest,
    MoveRequest,
    PathRequest,
    ProcessConnectRequest,
    ProcessRequest,
    SendInputRequest,
    SendSignalRequest,
    StartRequest,
    UpdateRequest,
    WatchRequest,
)
from workspace_server.e2b.pty import checked, find, registry, start_pty
from workspace_server.e2b.watch import create_watcher, get_watcher_events, remove_watcher, watch_dir
from workspace_server.services.background import StartCommand
from workspace_server.services.event_streams import ProcessEvent
from workspace_server.services.files import BoundedListing
from workspace_server.services.processes import RunCommand

log = logging.getLogger(__name__)
ENVD_PREFIX = PREFIX + "/envd"
KEEPALIVE_DEFAULT = 50.0
router = APIRouter(prefix=ENVD_PREFIX, include_in_schema=False)
Svc = Annotated[Services, Depends(services)]


def sandbox_of(request: Request, svc: Services) -> str:
    """The E2b-Sandbox-Id header names the sandbox; a sandbox reached through `Sandbox.connect`
    sends only its X-Access-Token (E2B routes by host name), which then identifies it."""
    token = request.headers.get("x-access-token")
    sandbox_id = request.headers.get("e2b-sandbox-id")
    if not sandbox_id and token:
        sandbox_id = tokens(request).sandbox_for(token, (r.id for r in svc.sandboxes.list()))
    if not sandbox_id:
        raise E2BError(401, "missing E2b-Sandbox-Id header or a valid X-Access-Token")
    if not tokens(request).valid(sandbox_id, token):
        raise E2BError(401, "missing or invalid X-Access-Token for this sandbox")
    return sandbox_id


def user_of(request: Request, query: str | None = None) -> str | None:
    """envd's user: `username` query or `Authorization: Basic base64(user:)`; default `user`."""
    if query:
        return query
    header = request.headers.get("authorization", "")
    if header[:6].lower() != "basic ":
        return None
    try:
        return base64.b64decode(header[6:], validate=True).decode().partition(":")[0] or None
    except (binascii.Error, UnicodeDecodeError):
        raise E2BError(400, "malformed Authorization header") from None


def entry(info: dict[str, Any]) -> dict[str, Any]:
    mode = int(info.get("mode", "0"), 8)
    return {
        "name": info["name"],
        "type": FILE_TYPES.get(info["type"], "FILE_TYPE_UNSPECIFIED"),
        "path": info["path"],
        "size": str(info.get("size", 0)),
        "mode": mode,
        "permissions": "".join(c if mode & (1 << (8 - i)) else "-" for i, c in enumerate("rwxrwxrwx")),
        "modifiedTime": info.get("modified_at"),
    }


def absolute(path: str) -> str:
    return path if path.startswith("/") else "/workspace/" + path


@router.get("/health")
async def health() -> Response:
    return Response(status_code=204)


@router.get("/files")
async def read_file(request: Request, svc: Svc, path: str = "", username: str | None = None) -> Response:
    try:
        sandbox_id = sandbox_of(request, svc)
        user_of(request, username)
        if not path:
            raise E2BError(400, "path is required")
        size, chunks = await svc.files.read(sandbox_id, absolute(path))
    except (WorkspaceError, E2BError) as exc:
        error = translate(exc)
        return JSONResponse({"code": error.status, "message": error.message}, status_code=error.status)
    return StreamingResponse(chunks, media_type="application/octet-stream", headers={"Content-Length": str(size)})


@router.post("/files")
async def write_file(request: Request, svc: Svc, path: str = "", username: str | None = None) -> Response:
    try:
        sandbox_id = sandbox_of(request, svc)
        user_of(request, username)
        if not path:
            raise E2BError(400, "path is required")
        if request.headers.get("content-type", "").startswith("multipart/"):
            raise E2BError(400, "multipart uploads are not served: send application/octet-stream (envd >= 0.5.7)")
        target = absolute(path)
        await svc.files.write(sandbox_id, target, request.stream(), svc.settings.max_upload_bytes)
    except (WorkspaceError, E2BError) as exc:
        error = translate(exc)
        return JSONResponse({"code": error.status, "message": error.message}, status_code=error.status)
    return JSONResponse([{"name": target.rsplit("/", 1)[-1], "type": "file", "path": target}])


Unary = Callable[[Request, Services, str, bytes], Awaitable[dict[str, Any]]]


async def stat(http: Request, svc: Services, sandbox_id: str, body: bytes) -> dict[str, Any]:
    request = PathRequest.model_validate_json(body)
    return {"entry": entry(await svc.files.stat(sandbox_id, absolute(request.path)))}


MAX_PENDING_DIRECTORIES = 10_000  # directories found but not yet listed (ListDir with depth)


async def list_dir(http: Request, svc: Services, sandbox_id: str, body: bytes) -> Response:
    """filesystem.Filesystem/ListDir, streamed as it is listed (like our own /files/list): at
    most max-list-entries entries in all, and at most MAX_PENDING_DIRECTORIES waiting to be
    descended into; errors before the first entry are Connect errors, later ones end the list."""
    if not http.headers.get("content-type", "").startswith("application/json"):
        raise E2BError(415, "only the Connect JSON codec (application/json) is served", "invalid_argument")
    request = ListDirRequest.model_validate_json(body)
    root = absolute(request.path)
    first = await svc.files.list(sandbox_id, root, svc.settings.max_list_entries)
    return StreamingResponse(
        _list_dir_json(svc, sandbox_id, first, max(1, request.depth)), media_type="application/json"
    )


async def _list_dir_json(svc: Services, sandbox_id: str, first: BoundedListing, depth: int) -> AsyncIterator[bytes]:
    budget = svc.settings.max_list_entries
    pending: collections.deque[tuple[str, int]] = collections.deque()
    listing: BoundedListing | None = first
    level = 1
    piece = bytearray(b'{"entries":[')
    separator = b""
    try:
        while listing is not None and budget > 0:
            async for info in listing.entries():
                piece += separator + json.dumps(entry(info), separators=(",", ":")).encode()
                separator = b","
                budget -= 1
                if info["type"] == "directory" and level < depth and len(pending) < MAX_PENDING_DIRECTORIES:
                    pending.append((info["path"], level + 1))
                if len(piece) >= 64 * 1024:
                    yield bytes(piece)
                    piece.clear()
                if budget == 0:
                    break
            listing.close()
            listing = None
            while pending and listing is None and budget > 0:
                directory, level = pending.popleft()
                with contextlib.suppress(WorkspaceError):  # gone or replaced meanwhile: skipped
                    listing = await svc.files.list(sandbox_id, directory, budget)
    except WorkspaceError as exc:
        log.warning("e2b ListDir cut short: %s", exc.message)
    finally:
        if listing is not None:
            listing.close()
    yield bytes(piece + b"]}")


async def make_dir(http: Request, svc: Services, sandbox_id: str, body: bytes) -> dict[str, Any]:
    request = PathRequest.model_validate_json(body)
    path = absolute(request.path)
    if await svc.files.exists(sandbox_id, path):
        raise E2BError(409, f"directory {path!r} already exists", "already_exists")
    return {"entry": entry(await svc.files.mkdir(sandbox_id, path, True))}


async def move(http: Request, svc: Services, sandbox_id: str, body: bytes) -> dict[str, Any]:
    request = MoveRequest.model_validate_json(body)
    moved = await svc.files.move(sandbox_id, absolute(request.source), absolute(request.destination))
    return {"entry": entry(moved)}


async def remove(http: Request, svc: Services, sandbox_id: str, body: bytes) -> dict[str, Any]:
    request = PathRequest.model_validate_json(body)
    await svc.files.remove(sandbox_id, absolute(request.path), True)
    return {}


async def list_processes(http: Request, svc: Services, sandbox_id: str, body: bytes) -> dict[str, Any]:
    processes = await svc.processes.list(sandbox_id)
    return {
        "processes": [
            {
                "pid": p["pid"],
                "tag": p.get("tag") or "",
                "config": {"cmd": p["command"], "args": p.get("args", []), "envs": {}, "cwd": p.get("cwd") or ""},
            }
            for p in processes
            if p.get("state", "running") == "running"  # envd lists live processes only
        ]
    }


async def send_signal(http: Request, svc: Services, sandbox_id: str, body: bytes) -> dict[str, Any]:
    request = SendSignalRequest.model_validate_json(body)
    if request.process.pid is None:
        raise E2BError(400, "process.pid is required (tags are not served)")
    if request.signal not in SIGNALS:
        raise E2BError(400, f"unknown signal {request.signal!r}")
    pty = registry(http).get((sandbox_id, request.process.pid))
    if pty is not None:
        await pty.kill(SIGNALS[request.signal])
    else:
        await svc.background.kill(sandbox_id, str(request.process.pid), SIGNALS[request.signal])
    return {}


def _deadline(request: Request) -> float | None:
    value = request.headers.get("connect-timeout-ms")
    if value is None:
        return None
    if not value.isdigit() or int(value) == 0:
        raise E2BError(400, "connect-timeout-ms must be a positive integer")
    return int(value) / 1000


def _keepalive(request: Request) -> float:
    value = request.headers.get("keepalive-ping-interval", "")
    return float(value) if value.isdigit() and int(value) > 0 else KEEPALIVE_DEFAULT


def _data(name: str, text: str) -> dict[str, Any]:
    return {"event": {"data": {name: base64.b64encode(text.encode()).decode()}}}


def _enveloped(body: bytes) -> bytes:
    if len(body) < 5 or body[0] != 0 or int.from_bytes(body[1:5], "big") != len(body) - 5:
        raise E2BError(400, "expected one uncompressed Connect envelope")
    return body[5:]


def _end(event: ProcessEvent) -> dict[str, Any]:
    """envd's EndEvent: Go's ProcessState strings ("exit status 1", "signal: killed")."""
    code, signal = event.data.get("code"), event.data.get("signal")
    if signal:
        name = SIGNAL_NAMES.get(int(signal), f"signal {signal}")
        return {"exitCode": -1, "exited": False, "status": f"signal: {name}"}
    return {"exitCode": code or 0, "exited": True, "status": f"exit status {code or 0}"}


async def start(request: Request, svc: Services, sandbox_id: str, body: bytes) -> Response:
    """process.Process/Start: a background process (it outlives the client's connection, as
    in envd), followed as a server stream. A deadline (connect-timeout-ms) kills it."""
    message = StartRequest.model_validate_json(_enveloped(body))
    if message.tag:
        raise E2BError(400, "tagged processes are not served")
    command = RunCommand(
        command=message.process.cmd,
        args=message.process.args,
        env=message.process.envs,
        cwd=absolute(message.process.cwd) if message.process.cwd else None,
        timeout=_deadline(request),
        user=user_of(request),
    )
    if message.pty is not None:
        return await start_pty(request, svc, sandbox_id, command, message.pty.size, _keepalive(request))
    loop = asyncio.get_running_loop()
    deadline = None if command.timeout is None else loop.time() + command.timeout
    started = await svc.background.start(sandbox_id, StartCommand(command, stdin=bool(message.stdin)))
    pid = int(started["pid"])
    events = await svc.background.follow(sandbox_id, str(pid), 0, _keepalive(request))
    return StreamingResponse(_frames(svc, sandbox_id, pid, events, deadline), media_type="application/connect+json")


async def connect(request: Request, svc: Services, sandbox_id: str, body: bytes) -> Response:
    """process.Process/Connect: follow a running process (its kept output is replayed first)."""
    message = ProcessConnectRequest.model_validate_json(_enveloped(body))
    if message.process.pid is None:
        raise E2BError(400, "process.pid is required (tags are not served)")
    pid = message.process.pid
    events = await svc.background.follow(sandbox_id, str(pid), 0, _keepalive(request))
    return StreamingResponse(_frames(svc, sandbox_id, pid, events, None), media_type="application/connect+json")


async def _frames(
    svc: Services, sandbox_id: str, pid: int, events: AsyncIterator[ProcessEvent | None], deadline: float | None
) -> AsyncIterator[bytes]:
    loop = asyncio.get_running_loop()
    iterator = aiter(events)
    try:
        while True:
            remaining = None if deadline is None else deadline - loop.time()
            try:
                # envd's deadline is the server's: answer deadline_exceeded on time (the SDK's
                # own read timeout is the same length) and kill the process.
                event = await asyncio.wait_for(anext(iterator), remaining)
            except TimeoutError:
                with contextlib.suppress(WorkspaceError):
                    await svc.background.kill(sandbox_id, str(pid), 9)
                yield end_stream(E2BError(504, "the process ran past its deadline and was killed", "deadline_exceeded"))
                return
            except StopAsyncIteration:
                yield end_stream(E2BError(500, "the process stream ended without an exit status"))
                return
            if event is None:
                yield envelope({"event": {"keepalive": {}}})
            elif event.type == "start":
                yield envelope({"event": {"start": {"pid": pid}}})
            elif event.type in ("stdout", "stderr"):
                yield envelope(_data(event.type, event.data["data"]))
            elif event.type == "exit":
                if event.data.get("timed_out"):
                    yield end_stream(
                        E2BError(504, "the process ran past its deadline and was killed", "deadline_exceeded")
                    )
                    return
                yield envelope({"event": {"end": _end(event)}})
                yield end_stream()
                return
            elif event.type == "error":
                yield end_stream(E2BError(503, f"{event.data['code']}: {event.data['message']}"))
                return
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def send_input(http: Request, svc: Services, sandbox_id: str, body: bytes) -> dict[str, Any]:
    request = SendInputRequest.model_validate_json(body)
    if request.process.pid is None:
        raise E2BError(400, "process.pid is required (tags are not served)")
    if request.input.pty is not None:
        await find(http, sandbox_id, request.process.pid).send_stdin(base64.b64decode(request.input.pty, validate=True))
        return {}
    data = base64.b64decode(request.input.stdin or "", validate=True)

    async def chunks() -> AsyncIterator[bytes]:
        yield data

    await svc.background.send_stdin(sandbox_id, str(request.process.pid), chunks())
    return {}


async def create_watcher_rpc(http: Request, svc: Services, sandbox_id: str, body: bytes) -> dict[str, Any]:
    request = WatchRequest.model_validate_json(body)
    return await create_watcher(http, svc, sandbox_id, absolute(request.path), request.recursive)


async def watch_dir_stream(request: Request, svc: Services, sandbox_id: str, body: bytes) -> Response:
    message = WatchRequest.model_validate_json(_enveloped(body))
    return await watch_dir(request, svc, sandbox_id, absolute(message.path), message.recursive)


async def update(http: Request, svc: Services, sandbox_id: str, body: bytes) -> dict[str, Any]:
    """process.Process/Update: resize a PTY."""
    request = UpdateRequest.model_validate_json(body)
    if request.process.pid is None or request.pty is None:
        raise E2BError(400, "process.pid and pty.size are required")
    size = checked(request.pty.size)
    await find(http, sandbox_id, request.process.pid).resize(size["cols"], size["rows"])
    return {}


async def close_stdin(http: Request, svc: Services, sandbox_id: str, body: bytes) -> dict[str, Any]:
    request = ProcessRequest.model_validate_json(body)
    if request.process.pid is None:
        raise E2BError(400, "process.pid is required (tags are not served)")
    await svc.background.close_stdin(sandbox_id, str(request.process.pid))
    return {}


UNARY: dict[str, Unary] = {
    "filesystem.Filesystem/Stat": stat,
    "filesystem.Filesystem/MakeDir": make_dir,
    "filesystem.Filesystem/Move": move,
    "filesystem.Filesystem/Remove": remove,
    "process.Process/List": list_processes,
    "process.Process/SendSignal": send_signal,
    "process.Process/SendInput": send_input,
    "process.Process/CloseStdin": close_stdin,
    "process.Process/Update": update,
    "filesystem.Filesystem/CreateWatcher": create_watcher_rpc,
    "filesystem.Filesystem/GetWatcherEvents": get_watcher_events,
    "filesystem.Filesystem/RemoveWatcher": remove_watcher,
}
Stream = Callable[[Request, Services, str, bytes], Awaitable[Response]]
STREAMS: dict[str, Stream] = {
    "process.Process/Start": start,
    "process.Process/Connect": connect,
    "filesystem.Filesystem/WatchDir": watch_dir_stream,
    "filesystem.Filesystem/ListDir": list_dir,
}


@router.post("/{service}/{method}")
async def rpc(service: str, method: str, request: Request, svc: Svc) -> Response:
    name = f"{service}/{method}"
    try:
        sandbox_id = sandbox_of(request, svc)
        body = await request.body()
        if name in STREAMS:
            return await STREAMS[name](request, svc, sandbox_id, body)
        handler = UNARY.get(name)
        if handler is None:
            raise E2BError(501, f"{name} is not served by this server", "unimplemented")
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise E2BError(415, "only the Connect JSON codec (application/json) is served", "invalid_argument")
        return JSONResponse(await handler(request, svc, sandbox_id, body))
    except (WorkspaceError, E2BError, ValueError) as exc:
        return connect_error(exc)
