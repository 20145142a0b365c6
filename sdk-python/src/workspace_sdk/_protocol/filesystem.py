"""File routes: ``/sandboxes/{id}/files...``."""

from __future__ import annotations

import json
from typing import Any, cast

from .._exceptions import error_from_envelope
from .._sse import ServerSentEvent
from ..types import FileInfo, FileList, FileType, FileWatchEvent, FileWatchEventType
from ._common import (
    ApiRequest,
    expect_object,
    invalid_response,
    optional_bool,
    optional_str,
    path_segment,
    query_bool,
    require_int,
    require_str,
)


def _files_path(sandbox_id: str, action: str = "") -> str:
    return f"/sandboxes/{path_segment(sandbox_id)}/files{action}"


def _context(sandbox_id: str, path: str) -> dict[str, str]:
    return {"sandbox_id": sandbox_id, "path": path}


def read_request(sandbox_id: str, path: str) -> ApiRequest:
    return ApiRequest(
        "GET",
        _files_path(sandbox_id),
        params={"path": path},
        error_context=_context(sandbox_id, path),
    )


def write_request(sandbox_id: str, path: str) -> ApiRequest:
    """The body (raw bytes, streamed) is supplied by the I/O layer."""
    return ApiRequest(
        "PUT",
        _files_path(sandbox_id),
        params={"path": path},
        error_context=_context(sandbox_id, path),
    )


def list_request(sandbox_id: str, path: str) -> ApiRequest:
    return ApiRequest(
        "GET",
        _files_path(sandbox_id, "/list"),
        params={"path": path},
        error_context=_context(sandbox_id, path),
    )


def stat_request(sandbox_id: str, path: str) -> ApiRequest:
    return ApiRequest(
        "GET",
        _files_path(sandbox_id, "/stat"),
        params={"path": path},
        error_context=_context(sandbox_id, path),
    )


def exists_request(sandbox_id: str, path: str) -> ApiRequest:
    return ApiRequest(
        "GET",
        _files_path(sandbox_id, "/exists"),
        params={"path": path},
        error_context=_context(sandbox_id, path),
    )


def mkdir_request(sandbox_id: str, path: str, recursive: bool) -> ApiRequest:
    return ApiRequest(
        "POST",
        _files_path(sandbox_id, "/mkdir"),
        json={"path": path, "recursive": recursive},
        error_context=_context(sandbox_id, path),
    )


def remove_request(sandbox_id: str, path: str, recursive: bool) -> ApiRequest:
    return ApiRequest(
        "DELETE",
        _files_path(sandbox_id),
        params={"path": path, "recursive": query_bool(recursive)},
        error_context=_context(sandbox_id, path),
    )


def move_request(sandbox_id: str, source: str, destination: str) -> ApiRequest:
    return ApiRequest(
        "POST",
        _files_path(sandbox_id, "/move"),
        json={"source": source, "destination": destination},
        error_context=_context(sandbox_id, source),
    )


def copy_request(sandbox_id: str, source: str, destination: str, recursive: bool) -> ApiRequest:
    return ApiRequest(
        "POST",
        _files_path(sandbox_id, "/copy"),
        json={"source": source, "destination": destination, "recursive": recursive},
        error_context=_context(sandbox_id, source),
    )


def parse_file_info(data: Any) -> FileInfo:
    obj = expect_object(data, "FileInfo")
    return FileInfo(
        name=require_str(obj, "name"),
        path=require_str(obj, "path"),
        type=cast(FileType, require_str(obj, "type")),
        size=require_int(obj, "size"),
        modified_at=optional_str(obj, "modified_at"),
        mode=optional_str(obj, "mode"),
    )


def parse_file_list(data: Any, context: dict[str, Any] | None = None) -> FileList:
    """The entries; a listing the server had to cut short after it began (its ``error``
    member: the sandbox's agent was lost...) raises that error instead of a partial list."""
    obj = expect_object(data, "file list")
    error = obj.get("error")
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        raise error_from_envelope(error, context=context)
    items = obj.get("files")
    if not isinstance(items, list):
        raise invalid_response("field 'files' must be a list")
    return FileList((parse_file_info(item) for item in items), truncated=obj.get("truncated") is True)


def parse_exists(data: Any) -> bool:
    value = expect_object(data, "exists response").get("exists")
    if not isinstance(value, bool):
        raise invalid_response(f"field 'exists' must be a boolean, got {value!r}")
    return value


WATCH_EVENT_TYPES = ("create", "write", "remove", "rename", "chmod", "overflow")


def watch_request(sandbox_id: str, path: str, recursive: bool) -> ApiRequest:
    return ApiRequest(
        "GET",
        _files_path(sandbox_id, "/watch"),
        params={"path": path, "recursive": query_bool(recursive)},
        error_context=_context(sandbox_id, path),
    )


def parse_watch_event(event: ServerSentEvent) -> FileWatchEvent | dict[str, Any] | None:
    """A change, the payload of a ``ready``/``error`` event (a dict with ``"event"`` set),
    or ``None`` for an event type this SDK version does not know."""
    known = event.event in WATCH_EVENT_TYPES
    if not known and event.event not in ("ready", "error"):
        return None
    try:
        payload = json.loads(event.data)
    except ValueError as exc:
        raise invalid_response(f"{event.event} event data is not JSON: {event.data!r}") from exc
    obj = expect_object(payload, f"{event.event} event")
    if not known:
        return {**obj, "event": event.event}
    kind = cast(FileWatchEventType, event.event)
    if kind == "overflow":
        return FileWatchEvent(type=kind, path=None, message=optional_str(obj, "message"))
    return FileWatchEvent(
        type=kind,
        path=require_str(obj, "path"),
        is_dir=optional_bool(obj, "is_dir") is True,
        new_path=optional_str(obj, "new_path"),
    )
