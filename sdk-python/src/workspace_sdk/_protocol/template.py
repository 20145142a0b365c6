"""Template routes: ``/templates``."""

from __future__ import annotations

from typing import Any

from ..types import Template
from ._common import ApiRequest, expect_object, invalid_response, optional_str, require_str


def list_request() -> ApiRequest:
    return ApiRequest("GET", "/templates")


def parse_template_list(data: Any) -> list[Template]:
    items = expect_object(data, "template list").get("templates")
    if not isinstance(items, list):
        raise invalid_response("field 'templates' must be a list")
    templates = []
    for item in items:
        obj = expect_object(item, "Template")
        templates.append(Template(name=require_str(obj, "name"), description=optional_str(obj, "description")))
    return templates
