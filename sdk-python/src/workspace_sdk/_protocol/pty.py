"""PTY routes: the WebSocket session protocol and the REST helpers."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .._exceptions import WorkspaceConnectionError, WorkspaceError, error_from_envelope
from ..types import PtyInfo, PtyOptions
from ._common import (
    ApiRequest,
    WebSocketRequest,
    expect_object,
    invalid_response,
    optional_int,
    optional_str,
    path_segment,
    require_int,
    require_str,
)

# Close codes the server uses when it ends a session with an error, mapped to the error code
# to report if the error frame itself was lost. 1000 is a normal close (after "exit").
CLOSE_CODE_ERRORS: Mapping[int, str] = {
    4400: "INVALID_REQUEST",
    4401: "UNAUTHORIZED",
    4404: "NOT_FOUND",
    4503: "AGENT_NOT_CONNECTED",
}


@dataclass(frozen=True)
class PtyReady:
    """First server frame of every session."""

    pty_id: str
    pid: int


@dataclass(frozen=True)
class PtyExited:
    """The shell exited (``code`` may be missing if the server could not tell)."""

    code: int | None


@dataclass(frozen=True)
class PtyFailed:
    """The server ended the session with an error envelope."""

    code: str
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)


def _pty_path(sandbox_id: str) -> str:
    return f"/sandboxes/{path_segment(sandbox_id)}/pty"


def open_request(sandbox_id: str, options: PtyOptions | None) -> WebSocketRequest:
    options = options or PtyOptions()
    params = {"cols": str(options.cols), "rows": str(options.rows)}
    if options.shell:
        params["shell"] = options.shell
    return WebSocketRequest(_pty_path(sandbox_id), params, {"sandbox_id": sandbox_id})


def attach_request(sandbox_id: str, pty_id: str) -> WebSocketRequest:
    return WebSocketRequest(
        f"{_pty_path(sandbox_id)}/{path_segment(pty_id)}",
        {},
        {"sandbox_id": sandbox_id, "pty_id": pty_id},
    )


def resize_frame(cols: int, rows: int) -> str:
    return json.dumps({"type": "resize", "cols": cols, "rows": rows})


KILL_FRAME = json.dumps({"type": "kill"})


def parse_server_frame(text: str) -> PtyReady | PtyExited | PtyFailed | None:
    """Decode a server text frame; ``None`` for frame types this SDK version ignores."""
    try:
        payload = json.loads(text)
    except ValueError as exc:
        raise invalid_response(f"PTY control frame is not JSON: {text!r}") from exc
    obj = expect_object(payload, "PTY control frame")
    frame_type = obj.get("type")
    if frame_type == "ready":
        return PtyReady(pty_id=require_str(obj, "pty_id"), pid=require_int(obj, "pid"))
    if frame_type == "exit":
        return PtyExited(code=optional_int(obj, "code"))
    if frame_type == "error":
        details = obj.get("details")
        return PtyFailed(
            code=optional_str(obj, "code") or "WORKSPACE_ERROR",
            message=optional_str(obj, "message") or "PTY session failed",
            details=details if isinstance(details, Mapping) else {},
        )
    return None


def failure_to_exception(failure: PtyFailed, context: Mapping[str, Any]) -> WorkspaceError:
    return error_from_envelope(
        {"code": failure.code, "message": failure.message, "details": dict(failure.details)},
        context=context,
    )


def close_to_exception(close_code: int | None, reason: str | None, context: Mapping[str, Any]) -> WorkspaceError:
    """The session closed without an error frame; say what the close code means."""
    message = reason or f"PTY WebSocket closed unexpectedly (close code {close_code})"
    code = CLOSE_CODE_ERRORS.get(close_code or 0)
    if code is None:
        return WorkspaceConnectionError(message, details=context)
    return error_from_envelope({"code": code, "message": message}, context=context)


def list_request(sandbox_id: str) -> ApiRequest:
    return ApiRequest("GET", _pty_path(sandbox_id), error_context={"sandbox_id": sandbox_id})


def resize_request(sandbox_id: str, pty_id: str, cols: int, rows: int) -> ApiRequest:
    return ApiRequest(
        "POST",
        f"{_pty_path(sandbox_id)}/{path_segment(pty_id)}/resize",
        json={"cols": cols, "rows": rows},
        error_context={"sandbox_id": sandbox_id, "pty_id": pty_id},
    )


def kill_request(sandbox_id: str, pty_id: str) -> ApiRequest:
    return ApiRequest(
        "POST",
        f"{_pty_path(sandbox_id)}/{path_segment(pty_id)}/kill",
        error_context={"sandbox_id": sandbox_id, "pty_id": pty_id},
    )


def parse_pty_list(data: Any) -> list[PtyInfo]:
    items = expect_object(data, "PTY list").get("ptys")
    if not isinstance(items, list):
        raise invalid_response("field 'ptys' must be a list")
    ptys = []
    for item in items:
        obj = expect_object(item, "PTY")
        ptys.append(
            PtyInfo(
                pty_id=require_str(obj, "pty_id"),
                pid=require_int(obj, "pid"),
                cols=require_int(obj, "cols"),
                rows=require_int(obj, "rows"),
            )
        )
    return ptys
