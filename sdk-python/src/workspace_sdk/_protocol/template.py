"""Template routes: ``/templates``, and a sandbox's ``/snapshot``."""

from __future__ import annotations

from typing import Any

from ..types import Template
from ._common import (
    ApiRequest,
    expect_object,
    invalid_response,
    optional_int,
    optional_str,
    optional_str_dict,
    optional_str_list,
    path_segment,
    query_bool,
    require_str,
)


def list_request() -> ApiRequest:
    return ApiRequest("GET", "/templates")


def get_request(name: str) -> ApiRequest:
    return ApiRequest("GET", f"/templates/{path_segment(name)}", error_context={"template": name})


def import_request(name: str, replace: bool, description: str) -> ApiRequest:
    params = {"name": name, "replace": query_bool(replace)}
    if description:
        params["description"] = description
    return ApiRequest("POST", "/templates/import", params=params, error_context={"template": name})


def delete_request(name: str) -> ApiRequest:
    return ApiRequest("DELETE", f"/templates/{path_segment(name)}", error_context={"template": name})


def snapshot_request(sandbox_id: str, name: str, replace: bool, description: str) -> ApiRequest:
    return ApiRequest(
        "POST",
        f"/sandboxes/{path_segment(sandbox_id)}/snapshot",
        json={"name": name, "replace": replace, "description": description},
        error_context={"sandbox_id": sandbox_id, "template": name},
    )


def parse_template(data: Any) -> Template:
    obj = expect_object(data, "Template")
    return Template(
        name=require_str(obj, "name"),
        description=optional_str(obj, "description"),
        digest=optional_str(obj, "digest"),
        layers=optional_str_list(obj, "layers") or [],
        size=optional_int(obj, "size") or 0,
        created_at=optional_str(obj, "created_at"),
        source=optional_str(obj, "source"),
        env=optional_str_dict(obj, "env") or {},
        working_dir=optional_str(obj, "working_dir"),
        user=optional_str(obj, "user"),
        labels=optional_str_dict(obj, "labels") or {},
    )


def parse_template_list(data: Any) -> list[Template]:
    items = expect_object(data, "template list").get("templates")
    if not isinstance(items, list):
        raise invalid_response("field 'templates' must be a list")
    return [parse_template(item) for item in items]
