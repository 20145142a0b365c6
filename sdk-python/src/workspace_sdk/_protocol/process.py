"""Process routes: run, stream (SSE), list and kill."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .._exceptions import WorkspaceError, error_from_envelope
from .._sse import ServerSentEvent
from ..types import (
    CommandResult,
    ErrorEvent,
    ExitEvent,
    ProcessEvent,
    ProcessInfo,
    RunCommandOptions,
    StderrEvent,
    StdoutEvent,
)
from ._common import (
    ApiRequest,
    expect_object,
    invalid_response,
    optional_str,
    optional_str_list,
    path_segment,
    require_int,
    require_str,
)


@dataclass(frozen=True)
class ProcessStarted:
    """The ``start`` event: first on every stream, carries the pid. The stream object
    consumes it and exposes ``.pid``; it is never yielded to users."""

    pid: int


def _processes_path(sandbox_id: str) -> str:
    return f"/sandboxes/{path_segment(sandbox_id)}/processes"


def command_body(command: str, options: RunCommandOptions | None) -> dict[str, Any]:
    """The ``RunCommand`` JSON body. ``args`` and ``env`` are always sent (empty by default);
    the nullable fields are sent as null when unset, which the server reads as "default"."""
    options = options or RunCommandOptions()
    return {
        "command": command,
        "args": list(options.args or []),
        "env": dict(options.env or {}),
        "cwd": options.cwd,
        "timeout": options.timeout,
        "user": options.user,
        "stdin": options.stdin,
    }


def run_request(sandbox_id: str, command: str, options: RunCommandOptions | None) -> ApiRequest:
    return ApiRequest(
        "POST",
        f"{_processes_path(sandbox_id)}/run",
        json=command_body(command, options),
        error_context={"sandbox_id": sandbox_id, "command": command},
    )


def stream_request(sandbox_id: str, command: str, options: RunCommandOptions | None) -> ApiRequest:
    return ApiRequest(
        "POST",
        f"{_processes_path(sandbox_id)}/stream",
        json=command_body(command, options),
        error_context={"sandbox_id": sandbox_id, "command": command},
    )


def kill_request(sandbox_id: str, pid: int, signal: int) -> ApiRequest:
    return ApiRequest(
        "POST",
        f"{_processes_path(sandbox_id)}/{path_segment(pid)}/kill",
        json={"signal": signal},
        error_context={"sandbox_id": sandbox_id, "pid": pid},
    )


def list_request(sandbox_id: str) -> ApiRequest:
    return ApiRequest("GET", _processes_path(sandbox_id), error_context={"sandbox_id": sandbox_id})


def parse_command_result(data: Any) -> CommandResult:
    obj = expect_object(data, "CommandResult")
    pid = obj.get("pid")
    return CommandResult(
        exit_code=require_int(obj, "exit_code"),
        stdout=require_str(obj, "stdout"),
        stderr=require_str(obj, "stderr"),
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
    )


def parse_process_list(data: Any) -> list[ProcessInfo]:
    items = expect_object(data, "process list").get("processes")
    if not isinstance(items, list):
        raise invalid_response("field 'processes' must be a list")
    processes = []
    for item in items:
        obj = expect_object(item, "process")
        processes.append(
            ProcessInfo(
                pid=require_int(obj, "pid"),
                command=require_str(obj, "command"),
                args=optional_str_list(obj, "args") or [],
                pty=obj.get("pty") is True,
            )
        )
    return processes


def parse_stream_event(event: ServerSentEvent) -> ProcessStarted | ProcessEvent | None:
    """Decode one SSE event of a process stream; ``None`` for event types this SDK version
    does not know (ignored for forward compatibility)."""
    if event.event not in ("start", "stdout", "stderr", "exit", "error"):
        return None
    try:
        payload = json.loads(event.data)
    except ValueError as exc:
        raise invalid_response(f"{event.event} event data is not JSON: {event.data!r}") from exc
    obj = expect_object(payload, f"{event.event} event")
    if event.event == "start":
        return ProcessStarted(pid=require_int(obj, "pid"))
    if event.event == "stdout":
        return StdoutEvent(data=require_str(obj, "data"))
    if event.event == "stderr":
        return StderrEvent(data=require_str(obj, "data"))
    if event.event == "exit":
        return ExitEvent(code=require_int(obj, "code"))
    return ErrorEvent(
        message=optional_str(obj, "message") or "process stream failed",
        code=optional_str(obj, "code"),
    )


def error_event_to_exception(event: ErrorEvent, context: dict[str, Any]) -> WorkspaceError:
    """An ``error`` event that arrives before ``start`` means the command never ran, which
    callers should see as the same exception a JSON error response would have produced."""
    return error_from_envelope({"code": event.code, "message": event.message}, context=context)
