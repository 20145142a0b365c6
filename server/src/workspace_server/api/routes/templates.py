"""Templates: list, get, import an image archive (a streamed upload), delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from workspace_server.api.deps import Services, services
from workspace_server.api.errors import ERROR_RESPONSES
from workspace_server.api.schemas import ShortText, SnapshotBody, TemplateBody, TemplateList

router = APIRouter(prefix="/api/v1", tags=["templates"], responses=ERROR_RESPONSES)

ARCHIVE_BODY = {
    "requestBody": {
        "required": True,
        "description": "A `docker save` / `podman save` archive or an OCI image archive (a tarred OCI "
        "layout), optionally gzip-compressed; streamed, any size up to the server's maximum image size.",
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.get("/templates", response_model=TemplateList)
async def list_templates(svc: Annotated[Services, Depends(services)]) -> TemplateList:
    return TemplateList(templates=[TemplateBody.of(t) for t in svc.templates.all()])


@router.post("/templates/import", status_code=201, response_model=TemplateBody, openapi_extra=ARCHIVE_BODY)
async def import_template(
    request: Request,
    svc: Annotated[Services, Depends(services)],
    name: Annotated[str, Query(min_length=1, max_length=200, description="name[:tag]; a bare name means :latest")],
    replace: Annotated[bool, Query(description="Replace an existing template of that name")] = False,
    description: Annotated[ShortText, Query()] = "",
) -> TemplateBody:
    template = await svc.templates.import_archive(name, request.stream(), replace=replace, description=description)
    return TemplateBody.of(template)


@router.get("/templates/{name:path}", response_model=TemplateBody)
async def get_template(name: str, svc: Annotated[Services, Depends(services)]) -> TemplateBody:
    return TemplateBody.of(svc.templates.get(name))


@router.delete("/templates/{name:path}", status_code=204, response_class=Response)
async def delete_template(name: str, svc: Annotated[Services, Depends(services)]) -> Response:
    await svc.templates.delete(name)
    return Response(status_code=204)


@router.post("/sandboxes/{sandbox_id}/snapshot", status_code=201, response_model=TemplateBody, tags=["sandboxes"])
async def snapshot_sandbox(
    sandbox_id: str, body: SnapshotBody, svc: Annotated[Services, Depends(services)]
) -> TemplateBody:
    """Save what the sandbox changed as a new template (its processes are frozen meanwhile)."""
    template = await svc.templates.snapshot(
        svc.sandboxes, sandbox_id, body.name, replace=body.replace, description=body.description
    )
    return TemplateBody.of(template)
