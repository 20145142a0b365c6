"""Ports of a sandbox: preview URLs, public ports, and raw TCP forwarding over a WebSocket.

(The HTTP proxy itself, `/api/v1/sandboxes/{id}/ports/{port}/...`, is ASGI middleware:
api/previews.py.)"""

from __future__ import annotations

import contextlib
from typing import Annotated

from fastapi import APIRouter, Depends, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, Field

from workspace_server.agent_link.tunnel import PortTunnel, TunnelClosed
from workspace_server.api.deps import Services, current_services, services
from workspace_server.api.errors import ERROR_RESPONSES
from workspace_server.api.port_relay import until_first_ends
from workspace_server.api.routes.pty import send_error
from workspace_server.domain.errors import WorkspaceError
from workspace_server.domain.previews import DEFAULT_TOKEN_SECONDS, MAX_TOKEN_SECONDS
from workspace_server.services.ports import PreviewUrl

router = APIRouter(prefix="/api/v1/sandboxes/{sandbox_id}", tags=["ports"], responses=ERROR_RESPONSES)
socket_router = APIRouter(prefix="/api/v1/sandboxes/{sandbox_id}")


class PreviewUrlRequest(BaseModel):
    port: int = Field(ge=1, le=65535)
    public: bool = Field(False, description="Make the port public: its URL then needs no token")
    expires_in: int = Field(
        DEFAULT_TOKEN_SECONDS, ge=1, le=MAX_TOKEN_SECONDS, description="Seconds the token stays valid"
    )


class PreviewUrlBody(BaseModel):
    url: str = Field(description="Ready to open: carries the token when the port is private")
    sandbox_id: str
    port: int
    public: bool
    token: str | None
    expires_at: float | None = Field(description="Unix time the token expires (null for a public port)")

    @classmethod
    def of(cls, preview: PreviewUrl) -> PreviewUrlBody:
        return cls(**preview.__dict__)


class PublicPortsBody(BaseModel):
    ports: list[int]
    every_port: bool = Field(
        default=False, description="Every port of the sandbox is public (a sandbox created through the E2B API)"
    )

    @classmethod
    def of(cls, svc: Services, sandbox_id: str, ports: list[int]) -> PublicPortsBody:
        return cls(ports=ports, every_port=svc.ports.every_port_public(sandbox_id))


@router.post("/preview-urls", response_model=PreviewUrlBody, status_code=201)
async def create_preview_url(
    sandbox_id: str, body: PreviewUrlRequest, svc: Annotated[Services, Depends(services)]
) -> PreviewUrlBody:
    """A preview URL for a port: `{port}-{sandbox_id}.{preview domain}` with a signed, expiring token."""
    return PreviewUrlBody.of(svc.ports.preview_url(sandbox_id, body.port, body.public, body.expires_in))


@router.get("/public-ports", response_model=PublicPortsBody)
async def list_public_ports(sandbox_id: str, svc: Annotated[Services, Depends(services)]) -> PublicPortsBody:
    return PublicPortsBody.of(svc, sandbox_id, svc.ports.public_ports(sandbox_id))


@router.put("/public-ports/{port}", response_model=PublicPortsBody)
async def make_port_public(sandbox_id: str, port: int, svc: Annotated[Services, Depends(services)]) -> PublicPortsBody:
    """Anyone who can reach the preview host may open this port, without a token."""
    return PublicPortsBody.of(svc, sandbox_id, svc.ports.set_public(sandbox_id, port, True))


@router.delete("/public-ports/{port}", response_model=PublicPortsBody)
async def revoke_public_port(
    sandbox_id: str, port: int, svc: Annotated[Services, Depends(services)]
) -> PublicPortsBody:
    """The port is private again: its preview URL needs a token."""
    return PublicPortsBody.of(svc, sandbox_id, svc.ports.set_public(sandbox_id, port, False))


@socket_router.websocket("/port-forward/{port}")
async def port_forward(websocket: WebSocket, sandbox_id: str, port: int) -> None:
    """A TCP connection to the port, as binary WebSocket messages both ways."""
    svc = current_services(websocket)
    await websocket.accept()
    try:
        async with svc.ports.tunnel(sandbox_id, port) as tunnel:
            await _relay_bytes(websocket, tunnel)
    except WorkspaceError as error:
        await send_error(websocket, error)


async def _relay_bytes(websocket: WebSocket, tunnel: PortTunnel) -> None:
    async def client_to_port() -> None:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes") or (message.get("text") or "").encode()
            if data:
                await tunnel.write(data)

    async def port_to_client() -> None:
        while data := await tunnel.read():
            await websocket.send_bytes(data)
        with contextlib.suppress(Exception):
            await websocket.close(1000)

    with contextlib.suppress(TunnelClosed, WebSocketDisconnect, RuntimeError):  # either side may end it
        await until_first_ends(client_to_port(), port_to_client())
