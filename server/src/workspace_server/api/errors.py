"""One error envelope for every failure, on every route."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from workspace_server.api.schemas import ErrorBody
from workspace_server.domain.errors import WorkspaceError, out_of_resources

log = logging.getLogger(__name__)

# The HTTP status of every error code (docs/api.md's table; a test checks they agree).
HTTP_STATUS: dict[str, int] = {
    "INVALID_REQUEST": 400,
    "COMMAND_NOT_FOUND": 400,
    "NOT_A_DIRECTORY": 400,
    "IS_A_DIRECTORY": 400,
    "UNAUTHORIZED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "SANDBOX_NOT_FOUND": 404,
    "TEMPLATE_NOT_FOUND": 404,
    "BUILD_NOT_FOUND": 404,
    "FILE_NOT_FOUND": 404,
    "PROCESS_NOT_FOUND": 404,
    "PTY_NOT_FOUND": 404,
    "METHOD_NOT_ALLOWED": 405,
    "PROCESS_TIMEOUT": 408,
    "SANDBOX_NOT_RUNNING": 409,
    "SANDBOX_PAUSED": 409,
    "INVALID_STATE_TRANSITION": 409,
    "TEMPLATE_EXISTS": 409,
    "TEMPLATE_IN_USE": 409,
    "INVALID_IMAGE": 400,
    "IMAGE_TOO_LARGE": 413,
    "BUILD_FAILED": 422,
    "BUILD_TIMEOUT": 408,
    "BUILD_CANCELLED": 409,
    "FILE_EXISTS": 409,
    "TAG_IN_USE": 409,
    "STDIN_CLOSED": 409,
    "DIRECTORY_NOT_EMPTY": 409,
    "PAYLOAD_TOO_LARGE": 413,
    "RESOURCE_EXHAUSTED": 429,
    "HEADERS_TOO_LARGE": 431,
    "INTERNAL": 500,
    "PORT_UNREACHABLE": 502,
    "AGENT_NOT_CONNECTED": 503,
    "SHUTTING_DOWN": 503,
    "UPSTREAM_TIMEOUT": 504,
    "DISK_QUOTA_EXCEEDED": 507,
    "STORAGE_ERROR": 507,
}


def http_status(error: WorkspaceError) -> int:
    return HTTP_STATUS.get(error.code, 500)


# The error code of a status the framework raises by itself (routing, body parsing).
HTTP_CODES = {
    400: "INVALID_REQUEST",
    401: "UNAUTHORIZED",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    413: "PAYLOAD_TOO_LARGE",
    415: "INVALID_REQUEST",
    422: "INVALID_REQUEST",
}

# Documented on every route so the OpenAPI document tells the whole truth.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "Invalid request"),
        (401, "Missing or wrong API key"),
        (403, "Permission denied"),
        (404, "Not found"),
        (405, "Method not allowed"),
        (408, "Command timed out"),
        (409, "Conflict"),
        (413, "Payload too large"),
        (429, "Too many sandboxes"),
        (431, "Request headers too large"),
        (500, "Internal error"),
        (503, "Agent not connected or server shutting down"),
        (507, "Out of space"),
    )
}


def error_response(
    code: str, message: str, status: int, details: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message, "details": details or {}}, status_code=status, headers=headers
    )


def _clean_validation_errors(errors: list[Any]) -> list[dict[str, Any]]:
    cleaned = []
    for error in errors[:20]:
        cleaned.append(
            {
                "loc": [str(part) for part in error.get("loc", ())],
                "msg": str(error.get("msg", "")),
                "type": str(error.get("type", "")),
            }
        )
    return cleaned


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(WorkspaceError)
    async def workspace_error(_: Request, exc: WorkspaceError) -> JSONResponse:
        status = http_status(exc)
        if status >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        return error_response(exc.code, exc.message, status, exc.details)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _clean_validation_errors(list(exc.errors()))
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        where = ".".join(p for p in first["loc"] if p not in ("body", "query", "path"))
        message = f"{where}: {first['msg']}" if where else str(first["msg"])
        return error_response("INVALID_REQUEST", message, 400, {"errors": errors})

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "INVALID_REQUEST" if exc.status_code < 500 else "INTERNAL")
        return error_response(code, str(exc.detail), exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(ClientDisconnect)
    async def client_gone(_: Request, exc: ClientDisconnect) -> JSONResponse:
        # Not a server error: the caller left (mid-upload, say). Nobody reads this answer.
        log.info("client disconnected before the request completed")
        return error_response("INVALID_REQUEST", "the client disconnected", 400)

    @app.exception_handler(OSError)
    async def os_error(_: Request, exc: OSError) -> JSONResponse:
        exhausted = out_of_resources(exc)
        if exhausted is None:
            log.exception("unexpected error")
            return error_response("INTERNAL", f"internal error: {type(exc).__name__}", 500)
        log.warning("%s", exhausted.message)
        return error_response(exhausted.code, exhausted.message, http_status(exhausted))

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        exhausted = out_of_resources(exc)
        if exhausted is not None:
            log.warning("%s", exhausted.message)
            return error_response(exhausted.code, exhausted.message, http_status(exhausted))
        log.exception("unexpected error")
        return error_response("INTERNAL", f"internal error: {type(exc).__name__}", 500)
