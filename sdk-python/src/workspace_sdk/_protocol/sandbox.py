"""Sandbox routes: ``/sandboxes`` and ``/sandboxes/{id}``."""

from __future__ import annotations

from typing import Any, cast

from ..types import CreateSandboxParams, ForkSandboxParams, OnTimeout, Sandbox, SandboxState
from ._common import (
    ApiRequest,
    drop_none,
    expect_object,
    invalid_response,
    optional_bool,
    optional_float,
    optional_int,
    optional_str,
    optional_str_dict,
    path_segment,
    query_bool,
    require_str,
)


def create_request(params: CreateSandboxParams | None) -> ApiRequest:
    params = params or CreateSandboxParams()
    body = drop_none(
        {
            "template": params.template,
            "name": params.name,
            "env": params.env,
            "metadata": params.metadata,
            "timeout": params.timeout,
            "cpu": params.cpu,
            "memory_mb": params.memory_mb,
            "pids": params.pids,
            "disk_mb": params.disk_mb,
            "network": params.network,
            "on_timeout": params.on_timeout,
            "idle_timeout": params.idle_timeout,
            "auto_resume": params.auto_resume,
        }
    )
    context = {"template": params.template} if params.template else {}
    return ApiRequest("POST", "/sandboxes", json=body, error_context=context)


def get_request(sandbox_id: str) -> ApiRequest:
    return ApiRequest("GET", f"/sandboxes/{path_segment(sandbox_id)}", error_context={"sandbox_id": sandbox_id})


def list_request(state: SandboxState | None) -> ApiRequest:
    return ApiRequest("GET", "/sandboxes", params={"state": state} if state else {})


def delete_request(sandbox_id: str, force: bool) -> ApiRequest:
    return ApiRequest(
        "DELETE",
        f"/sandboxes/{path_segment(sandbox_id)}",
        params={"force": query_bool(force)},
        error_context={"sandbox_id": sandbox_id},
    )


def lifecycle_request(sandbox_id: str, operation: str, force: bool | None = None) -> ApiRequest:
    """pause, resume, stop (with ``force``) or start."""
    return ApiRequest(
        "POST",
        f"/sandboxes/{path_segment(sandbox_id)}/{operation}",
        params={"force": query_bool(force)} if force is not None else {},
        error_context={"sandbox_id": sandbox_id},
    )


def fork_request(sandbox_id: str, params: ForkSandboxParams | None) -> ApiRequest:
    params = params or ForkSandboxParams()
    body = drop_none(
        {
            "name": params.name,
            "env": params.env,
            "metadata": params.metadata,
            "timeout": params.timeout,
            "on_timeout": params.on_timeout,
            "idle_timeout": params.idle_timeout,
            "auto_resume": params.auto_resume,
            "cpu": params.cpu,
            "memory_mb": params.memory_mb,
            "pids": params.pids,
            "network": params.network,
        }
    )
    return ApiRequest(
        "POST", f"/sandboxes/{path_segment(sandbox_id)}/fork", json=body, error_context={"sandbox_id": sandbox_id}
    )


def set_timeout_request(
    sandbox_id: str, timeout: int, on_timeout: OnTimeout | None, idle_timeout: int | None
) -> ApiRequest:
    body = drop_none({"timeout": timeout, "on_timeout": on_timeout, "idle_timeout": idle_timeout})
    return ApiRequest(
        "POST", f"/sandboxes/{path_segment(sandbox_id)}/timeout", json=body, error_context={"sandbox_id": sandbox_id}
    )


def parse_sandbox(data: Any) -> Sandbox:
    obj = expect_object(data, "Sandbox")
    return Sandbox(
        id=require_str(obj, "id"),
        template=require_str(obj, "template"),
        # Passed through unchecked: a state added by a newer server is still worth showing.
        state=cast(SandboxState, require_str(obj, "state")),
        created_at=require_str(obj, "created_at"),
        updated_at=require_str(obj, "updated_at"),
        name=optional_str(obj, "name"),
        env=optional_str_dict(obj, "env"),
        metadata=optional_str_dict(obj, "metadata"),
        nfs_url=optional_str(obj, "nfs_url"),
        timeout=optional_int(obj, "timeout"),
        error_message=optional_str(obj, "error_message"),
        expires_at=optional_str(obj, "expires_at"),
        cpu=optional_float(obj, "cpu"),
        memory_mb=optional_int(obj, "memory_mb"),
        pids=optional_int(obj, "pids"),
        disk_mb=optional_int(obj, "disk_mb"),
        network=optional_bool(obj, "network"),
        on_timeout=cast("OnTimeout | None", optional_str(obj, "on_timeout")),
        idle_timeout=optional_int(obj, "idle_timeout"),
        auto_resume=optional_bool(obj, "auto_resume"),
    )


def parse_sandbox_list(data: Any) -> list[Sandbox]:
    items = expect_object(data, "sandbox list").get("sandboxes")
    if not isinstance(items, list):
        raise invalid_response("field 'sandboxes' must be a list")
    return [parse_sandbox(item) for item in items]
