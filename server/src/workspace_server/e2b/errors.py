"""E2B-shaped errors: `{"code": <http status>, "message"}` on the control plane, Connect's
`{"code": "<connect code>", "message"}` (and end-stream error) on envd."""

from __future__ import annotations

import json
import struct
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import ValidationError

from workspace_server.api.errors import http_status
from workspace_server.domain.errors import WorkspaceError

CONNECT_CODES = {
    400: "invalid_argument",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    409: "failed_precondition",
    410: "not_found",
    413: "resource_exhausted",
    429: "resource_exhausted",
    503: "unavailable",
    504: "deadline_exceeded",
    507: "resource_exhausted",
}
CONNECT_HTTP = {
    "invalid_argument": 400,
    "unauthenticated": 401,
    "permission_denied": 403,
    "not_found": 404,
    "already_exists": 409,
    "failed_precondition": 412,
    "resource_exhausted": 429,
    "unavailable": 503,
    "deadline_exceeded": 504,
    "unimplemented": 501,
    "internal": 500,
}


class E2BError(Exception):
    def __init__(self, status: int, message: str, connect_code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.connect_code = connect_code or CONNECT_CODES.get(status, "internal")


def translate(exc: Exception) -> E2BError:
    if isinstance(exc, E2BError):
        return exc
    if isinstance(exc, WorkspaceError):
        status = http_status(exc)
        code = "already_exists" if exc.code in ("ALREADY_EXISTS", "FILE_EXISTS") else None
        return E2BError(status, f"{exc.code}: {exc.message}", code)
    if isinstance(exc, ValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return E2BError(400, f"invalid request: {problems}")
    if isinstance(exc, (ValueError, UnicodeDecodeError)):
        return E2BError(400, f"invalid request: {exc}")
    raise exc


def api_error(exc: Exception) -> JSONResponse:
    error = translate(exc)
    return JSONResponse({"code": error.status, "message": error.message}, status_code=error.status)


def connect_error(exc: Exception) -> JSONResponse:
    error = translate(exc)
    return JSONResponse(
        {"code": error.connect_code, "message": error.message},
        status_code=CONNECT_HTTP.get(error.connect_code, error.status),
    )


def envelope(message: dict[str, Any], end: bool = False) -> bytes:
    """One Connect streaming frame: flags byte (0x02 = end of stream), 4-byte length, JSON."""
    data = json.dumps(message, separators=(",", ":")).encode()
    return struct.pack(">BI", 0x02 if end else 0x00, len(data)) + data


def end_stream(exc: Exception | None = None) -> bytes:
    if exc is None:
        return envelope({}, end=True)
    error = translate(exc)
    return envelope({"error": {"code": error.connect_code, "message": error.message}}, end=True)
