"""E2B's control plane (POST/GET/DELETE /sandboxes, /v2/sandboxes, timeout, connect) on the
workspace services."""

from __future__ import annotations

import math
import time
from datetime import datetime, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from workspace_server.api.deps import Services, services
from workspace_server.domain.errors import WorkspaceError
from workspace_server.domain.models import Sandbox, SandboxState
from workspace_server.domain.templates import DEFAULT_TEMPLATE
from workspace_server.e2b.errors import E2BError, api_error
from workspace_server.e2b.messages import ENVD_VERSION, ConnectRequest, NewSandbox, TimeoutRequest
from workspace_server.e2b.tokens import AccessTokens
from workspace_server.services.create_request import CreateRequest

PREFIX = "/e2b"
CLIENT_ID = "workspace"
MAX_PAGE = 1000
router = APIRouter(prefix=PREFIX, include_in_schema=False)
Svc = Annotated[Services, Depends(services)]

VISIBLE = {SandboxState.RUNNING: "running", SandboxState.PAUSED: "paused", SandboxState.STARTING: "running"}


def template_name(e2b_template: str) -> str:
    return DEFAULT_TEMPLATE if e2b_template == "base" else e2b_template


def tokens(request: Request) -> AccessTokens:
    found: AccessTokens | None = getattr(request.app.state, "e2b_tokens", None)
    if found is None:
        found = request.app.state.e2b_tokens = AccessTokens(request.app.state.settings.data_dir)
    return found


def _time(value: str | float | None) -> str:
    if value is None:
        return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    if isinstance(value, str):
        return value
    return datetime.fromtimestamp(value, timezone.utc).isoformat().replace("+00:00", "Z")


def describe(svc: Services, record: Sandbox, token: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "sandboxID": record.id,
        "templateID": record.template,
        "clientID": CLIENT_ID,
        "envdVersion": ENVD_VERSION,
        "cpuCount": max(1, math.ceil(record.limits.cpu)),
        "memoryMB": record.limits.memory_mb,
        "diskSizeMB": record.limits.disk_mb,
        "startedAt": _time(record.started_at or record.created_at),
        "endAt": _time(record.expires_at if record.expires_at is not None else time.time() + 86_400 * 365),
        "state": VISIBLE.get(record.state, "paused"),
        "metadata": record.metadata,
        "domain": svc.ports.site.host_suffix,
    }
    if token is not None:
        info["envdAccessToken"] = token
    return info


def connection_info(svc: Services, request: Request, record: Sandbox, status_code: int) -> JSONResponse:
    """What a create or a connect answers: where and how to reach the sandbox's envd."""
    sandbox = describe(svc, record, tokens(request).token(record.id))
    return JSONResponse(
        {k: sandbox[k] for k in ("sandboxID", "templateID", "clientID", "envdVersion", "envdAccessToken", "domain")},
        status_code=status_code,
    )


def visible(svc: Services, sandbox_id: str) -> Sandbox:
    record = svc.sandboxes.get(sandbox_id)
    if record.state not in VISIBLE and record.state != SandboxState.STOPPED:
        raise E2BError(404, f"sandbox {sandbox_id!r} not found")
    return record


@router.post("/sandboxes")
async def create(request: Request, svc: Svc) -> Response:
    try:
        body = NewSandbox.model_validate_json(await request.body())
        network = body.network
        if network is not None and (network.allow_out or network.deny_out or network.mask_request_host):
            raise E2BError(400, "egress rules (allowOut, denyOut) and maskRequestHost are not supported")
        record = await svc.sandboxes.create(
            CreateRequest(
                template=template_name(body.template_id),
                timeout=body.timeout,
                metadata=body.metadata,
                env=body.env_vars,
                network=body.allow_internet_access,
                on_timeout="pause" if body.auto_pause else None,
            )
        )
        if network is None or network.allow_public_traffic:
            svc.ports.make_every_port_public(record.id)  # E2B's default: get_host(port) URLs need no token
    except (WorkspaceError, E2BError, ValueError) as exc:
        return api_error(exc)
    return connection_info(svc, request, record, status_code=201)


@router.get("/sandboxes/{sandbox_id}")
async def get(sandbox_id: str, request: Request, svc: Svc) -> Response:
    try:
        record = visible(svc, sandbox_id)
    except (WorkspaceError, E2BError) as exc:
        return api_error(exc)
    return JSONResponse(describe(svc, record, tokens(request).token(record.id)))


def _listed(svc: Services, state: str | None, metadata: str | None) -> list[Sandbox]:
    wanted = set((state or "running,paused").split(","))
    if not wanted <= {"running", "paused"}:
        raise E2BError(400, "state must be running and/or paused")
    filters: dict[str, str] = {}
    for pair in filter(None, (metadata or "").split("&")):
        key, _, value = pair.partition("=")
        filters[key] = value
    return [
        r
        for r in sorted(svc.sandboxes.list(), key=lambda r: (r.created_at, r.id))
        if VISIBLE.get(r.state) in wanted and all(r.metadata.get(k) == v for k, v in filters.items())
    ]


@router.get("/sandboxes")
async def list_v1(svc: Svc, metadata: str | None = None) -> Response:
    try:
        return JSONResponse([describe(svc, r) for r in _listed(svc, None, metadata)])
    except E2BError as exc:
        return api_error(exc)


@router.get("/v2/sandboxes")
async def list_v2(
    svc: Svc, metadata: str | None = None, state: str | None = None, nextToken: str | None = None, limit: int = 100
) -> Response:
    try:
        if not 1 <= limit <= MAX_PAGE:
            raise E2BError(400, f"limit must be between 1 and {MAX_PAGE}")
        records = _listed(svc, state, metadata)
        if nextToken:  # the token is the id of the first sandbox of the next page
            ids = [r.id for r in records]
            if nextToken not in ids:
                raise E2BError(400, "invalid nextToken")
            records = records[ids.index(nextToken) :]
    except E2BError as exc:
        return api_error(exc)
    page, rest = records[:limit], records[limit:]
    headers = {"X-Next-Token": rest[0].id} if rest else {}
    return JSONResponse([describe(svc, r) for r in page], headers=headers)


@router.delete("/sandboxes/{sandbox_id}")
async def kill(sandbox_id: str, svc: Svc) -> Response:
    try:
        visible(svc, sandbox_id)
        await svc.sandboxes.delete(sandbox_id)
    except (WorkspaceError, E2BError) as exc:
        return api_error(exc)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/timeout")
async def set_timeout(sandbox_id: str, request: Request, svc: Svc) -> Response:
    try:
        body = TimeoutRequest.model_validate_json(await request.body())
        visible(svc, sandbox_id)
        await svc.lifecycle.set_timeout(sandbox_id, max(1, body.timeout))
    except (WorkspaceError, E2BError, ValueError) as exc:
        return api_error(exc)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/connect")
async def connect(sandbox_id: str, request: Request, svc: Svc) -> Response:
    """Resume a paused (or start a stopped) sandbox, extend its timeout, describe it."""
    try:
        body = ConnectRequest.model_validate_json(await request.body())
        record = visible(svc, sandbox_id)
        resumed = record.state != SandboxState.RUNNING
        if record.state == SandboxState.PAUSED:
            await svc.lifecycle.resume(sandbox_id)
        elif record.state == SandboxState.STOPPED:
            await svc.lifecycle.start(sandbox_id)
        if body.timeout:
            await svc.lifecycle.set_timeout(sandbox_id, body.timeout)
        record = svc.sandboxes.get(sandbox_id)
    except (WorkspaceError, E2BError, ValueError) as exc:
        return api_error(exc)
    return connection_info(svc, request, record, status_code=201 if resumed else 200)
