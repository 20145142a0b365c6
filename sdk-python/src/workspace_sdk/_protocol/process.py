"""Process routes: run, stream (SSE), list and kill; background processes (start, follow
their output by offset, stdin, wait)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .._exceptions import WorkspaceError, error_from_envelope
from .._sse import ServerSentEvent
from ..types import (
    CommandResult,
    DroppedEvent,
    ErrorEvent,
    ExitEvent,
    ProcessEvent,
    ProcessInfo,
    ProcessOutputEvent,
    ProcessState,
    RunCommandOptions,
    StderrEvent,
    StdoutEvent,
)
from ._common import (
    ApiRequest,
    expect_object,
    invalid_response,
    optional_bool,
    optional_int,
    optional_str,
    optional_str_list,
    path_segment,
    require_int,
    require_str,
)

MAX_WAIT_SLICE = 30.0  # one wait request; longer waits are several (the server allows up to 60 s)


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


@dataclass(frozen=True)
class OutputStarted:
    """The ``start`` event of an output stream: where the replay begins, and how many bytes
    from the requested offset on were no longer kept (``dropped``)."""

    pid: int
    tag: str | None
    offset: int
    dropped: int


def _target_context(sandbox_id: str, pid_or_tag: int | str) -> dict[str, Any]:
    key = "pid" if isinstance(pid_or_tag, int) else "tag"
    return {"sandbox_id": sandbox_id, key: pid_or_tag}


def _process_path(sandbox_id: str, pid_or_tag: int | str, action: str = "") -> str:
    if isinstance(pid_or_tag, bool) or not isinstance(pid_or_tag, (int, str)) or pid_or_tag == "":
        raise TypeError(f"pid_or_tag must be a pid (int) or a tag (str), got {pid_or_tag!r}")
    return f"{_processes_path(sandbox_id)}/{path_segment(pid_or_tag)}{action}"


def kill_request(sandbox_id: str, pid_or_tag: int | str, signal: int) -> ApiRequest:
    return ApiRequest(
        "POST",
        _process_path(sandbox_id, pid_or_tag, "/kill"),
        json={"signal": signal},
        error_context=_target_context(sandbox_id, pid_or_tag),
    )


def start_request(
    sandbox_id: str,
    command: str,
    options: RunCommandOptions | None,
    tag: str | None,
    stdin: bool,
    log_bytes: int | None,
) -> ApiRequest:
    body = command_body(command, options)
    del body["stdin"]  # text stdin is sent after the start (see ProcessService.start)
    body.update(tag=tag, stdin=stdin, log_bytes=log_bytes)
    return ApiRequest(
        "POST",
        _processes_path(sandbox_id),
        json=body,
        error_context={"sandbox_id": sandbox_id, "command": command, **({"tag": tag} if tag else {})},
    )


def info_request(sandbox_id: str, pid_or_tag: int | str) -> ApiRequest:
    return ApiRequest(
        "GET", _process_path(sandbox_id, pid_or_tag), error_context=_target_context(sandbox_id, pid_or_tag)
    )


def output_request(sandbox_id: str, pid_or_tag: int | str, offset: int) -> ApiRequest:
    return ApiRequest(
        "GET",
        _process_path(sandbox_id, pid_or_tag, "/output"),
        params={"offset": str(int(offset))},
        error_context=_target_context(sandbox_id, pid_or_tag),
    )


def wait_request(sandbox_id: str, pid_or_tag: int | str, timeout: float) -> ApiRequest:
    return ApiRequest(
        "POST",
        _process_path(sandbox_id, pid_or_tag, "/wait"),
        params={"timeout": f"{max(0.0, min(timeout, MAX_WAIT_SLICE)):.3f}"},
        error_context=_target_context(sandbox_id, pid_or_tag),
    )


def stdin_request(sandbox_id: str, pid_or_tag: int | str) -> ApiRequest:
    """The body (raw bytes, streamed) is supplied by the I/O layer."""
    return ApiRequest(
        "POST", _process_path(sandbox_id, pid_or_tag, "/stdin"), error_context=_target_context(sandbox_id, pid_or_tag)
    )


def close_stdin_request(sandbox_id: str, pid_or_tag: int | str) -> ApiRequest:
    return ApiRequest(
        "POST",
        _process_path(sandbox_id, pid_or_tag, "/stdin/close"),
        error_context=_target_context(sandbox_id, pid_or_tag),
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
        stdout_truncated=obj.get("stdout_truncated") is True,
        stderr_truncated=obj.get("stderr_truncated") is True,
    )


def parse_process_info(data: Any) -> ProcessInfo:
    obj = expect_object(data, "process")
    raw_state = obj.get("state") or "running"
    if raw_state not in ("running", "exited"):
        raise invalid_response(f"field 'state' must be 'running' or 'exited', got {raw_state!r}")
    state: ProcessState = "running" if raw_state == "running" else "exited"
    return ProcessInfo(
        pid=require_int(obj, "pid"),
        command=require_str(obj, "command"),
        args=optional_str_list(obj, "args") or [],
        pty=obj.get("pty") is True,
        tag=optional_str(obj, "tag"),
        cwd=optional_str(obj, "cwd"),
        user=optional_str(obj, "user"),
        background=optional_bool(obj, "background") is True,
        started_at=optional_str(obj, "started_at"),
        state=state,
        exit_code=optional_int(obj, "exit_code"),
        signal=optional_int(obj, "signal"),
        finished_at=optional_str(obj, "finished_at"),
        timed_out=optional_bool(obj, "timed_out") is True,
        stdin=optional_bool(obj, "stdin") is True,
        output_start=optional_int(obj, "output_start"),
        output_end=optional_int(obj, "output_end"),
    )


def parse_process_list(data: Any) -> list[ProcessInfo]:
    items = expect_object(data, "process list").get("processes")
    if not isinstance(items, list):
        raise invalid_response("field 'processes' must be a list")
    return [parse_process_info(item) for item in items]


def exit_of(info: ProcessInfo) -> ExitEvent | None:
    """The exit event a finished process's info describes (``None`` while it runs)."""
    if info.state != "exited" or info.exit_code is None:
        return None
    return ExitEvent(
        code=info.exit_code,
        signal=info.signal,
        finished_at=info.finished_at,
        timed_out=info.timed_out,
        end=info.output_end,
    )


def _event_payload(event: ServerSentEvent) -> Any:
    try:
        return json.loads(event.data)
    except ValueError as exc:
        raise invalid_response(f"{event.event} event data is not JSON: {event.data!r}") from exc


def parse_output_event(event: ServerSentEvent) -> OutputStarted | ProcessOutputEvent | None:
    """Decode one SSE event of a background process's output stream; ``None`` for event
    types this SDK version does not know."""
    if event.event not in ("start", "stdout", "stderr", "dropped", "exit", "error"):
        return None
    obj = expect_object(_event_payload(event), f"{event.event} event")
    if event.event == "start":
        return OutputStarted(
            pid=require_int(obj, "pid"),
            tag=optional_str(obj, "tag"),
            offset=require_int(obj, "offset"),
            dropped=optional_int(obj, "dropped") or 0,
        )
    if event.event in ("stdout", "stderr"):
        cls = StdoutEvent if event.event == "stdout" else StderrEvent
        return cls(data=require_str(obj, "data"), offset=require_int(obj, "offset"), end=require_int(obj, "end"))
    if event.event == "dropped":
        return DroppedEvent(offset=require_int(obj, "offset"), end=require_int(obj, "end"))
    if event.event == "exit":
        return ExitEvent(
            code=require_int(obj, "code"),
            signal=optional_int(obj, "signal"),
            finished_at=optional_str(obj, "finished_at"),
            timed_out=optional_bool(obj, "timed_out") is True,
            end=optional_int(obj, "end"),
        )
    return ErrorEvent(
        message=optional_str(obj, "message") or "output stream failed",
        code=optional_str(obj, "code"),
    )


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
