"""Port routes of a sandbox: preview URLs, public ports, TCP forwarding."""

from __future__ import annotations

from typing import Any

from ._common import ApiRequest, WebSocketRequest, drop_none, expect_object, invalid_response, path_segment, require_str


def preview_url_request(sandbox_id: str, port: int, public: bool, expires_in: int | None) -> ApiRequest:
    body = drop_none({"port": port, "public": public, "expires_in": expires_in})
    return ApiRequest(
        "POST",
        f"/sandboxes/{path_segment(sandbox_id)}/preview-urls",
        json=body,
        error_context={"sandbox_id": sandbox_id},
    )


def public_ports_request(sandbox_id: str) -> ApiRequest:
    return ApiRequest(
        "GET", f"/sandboxes/{path_segment(sandbox_id)}/public-ports", error_context={"sandbox_id": sandbox_id}
    )


def set_public_request(sandbox_id: str, port: int, public: bool) -> ApiRequest:
    return ApiRequest(
        "PUT" if public else "DELETE",
        f"/sandboxes/{path_segment(sandbox_id)}/public-ports/{port}",
        error_context={"sandbox_id": sandbox_id},
    )


def port_forward_request(sandbox_id: str, port: int) -> WebSocketRequest:
    return WebSocketRequest(
        f"/sandboxes/{path_segment(sandbox_id)}/port-forward/{port}", error_context={"sandbox_id": sandbox_id}
    )


def parse_url(data: Any) -> str:
    return require_str(expect_object(data, "preview URL"), "url")


def parse_ports(data: Any) -> list[int]:
    ports = expect_object(data, "public ports").get("ports")
    if not isinstance(ports, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in ports):
        raise invalid_response("field 'ports' must be a list of integers")
    return list(ports)
