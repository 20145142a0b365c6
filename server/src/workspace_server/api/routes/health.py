from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from workspace_server.api.deps import Services, services
from workspace_server.api.errors import ERROR_RESPONSES
from workspace_server.api.schemas import Health

router = APIRouter(tags=["service"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


METRICS_DOC: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    200: {"description": "Prometheus metrics", "content": {"text/plain": {"schema": {"type": "string"}}}},
}


@router.get("/metrics", response_class=Response, responses=METRICS_DOC)
async def metrics(svc: Annotated[Services, Depends(services)]) -> Response:
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)
