from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends, Query, Response

from workspace_server.api.deps import Services, services
from workspace_server.api.errors import ERROR_RESPONSES
from workspace_server.api.schemas import CreateSandboxBody, SandboxBody, SandboxList
from workspace_server.domain.models import SandboxState
from workspace_server.services.create_request import CreateRequest

router = APIRouter(prefix="/api/v1", tags=["sandboxes"], responses=ERROR_RESPONSES)


@router.post("/sandboxes", status_code=201, response_model=SandboxBody)
async def create_sandbox(
    svc: Annotated[Services, Depends(services)],
    body: Annotated[CreateSandboxBody | None, Body()] = None,
) -> SandboxBody:
    params = (body or CreateSandboxBody()).model_dump()
    sandbox = await svc.sandboxes.create(CreateRequest(**params))
    return SandboxBody.of(sandbox)


@router.get("/sandboxes", response_model=SandboxList)
async def list_sandboxes(
    svc: Annotated[Services, Depends(services)],
    state: Annotated[SandboxState | None, Query()] = None,
) -> SandboxList:
    found = svc.sandboxes.list(state)
    return SandboxList(sandboxes=[SandboxBody.of(s) for s in found])


@router.get("/sandboxes/{sandbox_id}", response_model=SandboxBody)
async def get_sandbox(sandbox_id: str, svc: Annotated[Services, Depends(services)]) -> SandboxBody:
    return SandboxBody.of(svc.sandboxes.get(sandbox_id))


@router.delete("/sandboxes/{sandbox_id}", status_code=204, response_class=Response)
async def delete_sandbox(
    sandbox_id: str,
    svc: Annotated[Services, Depends(services)],
    force: bool = False,
) -> Response:
    await svc.sandboxes.delete(sandbox_id, force=force)
    return Response(status_code=204)
