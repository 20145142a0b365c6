"""Lifecycle routes of one sandbox: pause, resume, stop, start, fork, timeout."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends

from workspace_server.api.deps import Services, services
from workspace_server.api.errors import ERROR_RESPONSES
from workspace_server.api.schemas import ForkSandboxBody, LifecycleBody, SandboxBody, SetTimeoutBody
from workspace_server.services.lifecycle import ForkRequest, Outcome

router = APIRouter(prefix="/api/v1/sandboxes/{sandbox_id}", tags=["lifecycle"], responses=ERROR_RESPONSES)


def answer(outcome: Outcome) -> LifecycleBody:
    return LifecycleBody(**SandboxBody.of(outcome.sandbox).model_dump(), changed=outcome.changed)


@router.post("/pause", response_model=LifecycleBody)
async def pause_sandbox(sandbox_id: str, svc: Annotated[Services, Depends(services)]) -> LifecycleBody:
    """Freeze the sandbox's processes (files and the process list keep working)."""
    return answer(await svc.lifecycle.pause(sandbox_id))


@router.post("/resume", response_model=LifecycleBody)
async def resume_sandbox(sandbox_id: str, svc: Annotated[Services, Depends(services)]) -> LifecycleBody:
    return answer(await svc.lifecycle.resume(sandbox_id))


@router.post("/stop", response_model=LifecycleBody)
async def stop_sandbox(
    sandbox_id: str, svc: Annotated[Services, Depends(services)], force: bool = False
) -> LifecycleBody:
    """End every process (SIGTERM and a 2 s grace unless force) and free the memory; keep the disk."""
    return answer(await svc.lifecycle.stop(sandbox_id, force=force))


@router.post("/start", response_model=LifecycleBody)
async def start_sandbox(sandbox_id: str, svc: Annotated[Services, Depends(services)]) -> LifecycleBody:
    """Boot a stopped sandbox again on its disk, with the same id and settings."""
    return answer(await svc.lifecycle.start(sandbox_id))


@router.post("/fork", status_code=201, response_model=SandboxBody)
async def fork_sandbox(
    sandbox_id: str,
    svc: Annotated[Services, Depends(services)],
    body: Annotated[ForkSandboxBody | None, Body()] = None,
) -> SandboxBody:
    """A new running sandbox with a copy of this one's files (processes are not copied)."""
    request = ForkRequest(**(body or ForkSandboxBody()).model_dump())
    return SandboxBody.of(await svc.lifecycle.fork(sandbox_id, request))


@router.post("/timeout", response_model=SandboxBody)
async def set_sandbox_timeout(
    sandbox_id: str, body: SetTimeoutBody, svc: Annotated[Services, Depends(services)]
) -> SandboxBody:
    return SandboxBody.of(
        await svc.lifecycle.set_timeout(
            sandbox_id, body.timeout, on_timeout=body.on_timeout, idle_timeout=body.idle_timeout
        )
    )
