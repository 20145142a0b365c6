"""The error table: every documented code maps to its class, and the classes behave."""

from __future__ import annotations

import builtins
import errno
import pickle
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

import workspace_sdk
from workspace_sdk import (
    ERROR_CODE_TABLE,
    AgentNotConnectedError,
    AuthenticationError,
    BuildCancelledError,
    BuildFailedError,
    BuildNotFoundError,
    BuildTimeoutError,
    CommandNotFoundError,
    FileExistsError,
    FileNotFoundError,
    InvalidImageError,
    InvalidRequestError,
    InvalidStateTransitionError,
    PermissionDeniedError,
    ProcessNotFoundError,
    ProcessTimeoutError,
    PtyNotFoundError,
    RequestTimeoutError,
    SandboxNotFoundError,
    SandboxNotRunningError,
    SandboxPausedError,
    StdinClosedError,
    TagInUseError,
    TemplateExistsError,
    TemplateInUseError,
    TemplateNotFoundError,
    WaitTimeoutError,
    WorkspaceConnectionError,
    WorkspaceError,
)
from workspace_sdk._exceptions import (
    error_from_envelope,
    error_from_response,
    error_from_transport,
)

# docs/api.md, "Errors" table, restated so the test stands on its own.
DOCUMENTED: dict[str, tuple[int, type[WorkspaceError]]] = {
    "INVALID_REQUEST": (400, InvalidRequestError),
    "COMMAND_NOT_FOUND": (400, CommandNotFoundError),
    "UNAUTHORIZED": (401, AuthenticationError),
    "PERMISSION_DENIED": (403, PermissionDeniedError),
    "SANDBOX_NOT_FOUND": (404, SandboxNotFoundError),
    "TEMPLATE_NOT_FOUND": (404, TemplateNotFoundError),
    "FILE_NOT_FOUND": (404, FileNotFoundError),
    "PROCESS_NOT_FOUND": (404, ProcessNotFoundError),
    "PTY_NOT_FOUND": (404, PtyNotFoundError),
    "NOT_FOUND": (404, WorkspaceError),
    "METHOD_NOT_ALLOWED": (405, WorkspaceError),
    "PROCESS_TIMEOUT": (408, ProcessTimeoutError),
    "SANDBOX_NOT_RUNNING": (409, SandboxNotRunningError),
    "SANDBOX_PAUSED": (409, SandboxPausedError),
    "INVALID_STATE_TRANSITION": (409, InvalidStateTransitionError),
    "TEMPLATE_EXISTS": (409, TemplateExistsError),
    "TEMPLATE_IN_USE": (409, TemplateInUseError),
    "INVALID_IMAGE": (400, InvalidImageError),
    "IMAGE_TOO_LARGE": (413, WorkspaceError),
    "BUILD_NOT_FOUND": (404, BuildNotFoundError),
    "BUILD_FAILED": (422, BuildFailedError),
    "BUILD_TIMEOUT": (408, BuildTimeoutError),
    "BUILD_CANCELLED": (409, BuildCancelledError),
    "FILE_EXISTS": (409, FileExistsError),
    "TAG_IN_USE": (409, TagInUseError),
    "STDIN_CLOSED": (409, StdinClosedError),
    "DIRECTORY_NOT_EMPTY": (409, WorkspaceError),
    "NOT_A_DIRECTORY": (400, WorkspaceError),
    "IS_A_DIRECTORY": (400, WorkspaceError),
    "PAYLOAD_TOO_LARGE": (413, WorkspaceError),
    "HEADERS_TOO_LARGE": (431, WorkspaceError),
    "DISK_QUOTA_EXCEEDED": (507, WorkspaceError),
    "SHUTTING_DOWN": (503, WorkspaceError),
    "RESOURCE_EXHAUSTED": (429, WorkspaceError),
    "INTERNAL": (500, WorkspaceError),
    "PORT_UNREACHABLE": (502, WorkspaceError),
    "UPSTREAM_TIMEOUT": (504, WorkspaceError),
    "AGENT_NOT_CONNECTED": (503, AgentNotConnectedError),
    "STORAGE_ERROR": (507, WorkspaceError),
}

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def envelope_body(code: str, message: str = "boom", **details: object) -> bytes:
    return httpx.Response(200, json={"code": code, "message": message, "details": details}).content


@pytest.mark.parametrize(("code", "status", "expected"), [(c, s, e) for c, (s, e) in DOCUMENTED.items()])
def test_documented_code_maps_to_exact_class(code: str, status: int, expected: type[WorkspaceError]) -> None:
    error = error_from_response(status, envelope_body(code, "what happened"))
    assert type(error) is expected
    assert error.code == code
    assert error.message == "what happened"
    assert error.status_code == status
    assert str(error) == f"[{code}] what happened"


def test_table_has_exactly_the_documented_codes() -> None:
    assert dict(ERROR_CODE_TABLE) == {code: cls for code, (_, cls) in DOCUMENTED.items()}


@pytest.mark.skipif(not API_DOC.exists(), reason="docs/api.md is not next to the SDK")
def test_table_matches_docs_api_md() -> None:
    """Parse the table in docs/api.md itself, so a code added there fails here first."""
    rows = re.findall(
        r"^\| (`[A-Z_]+`(?: / `[A-Z_]+`)*) \| \d+ \|[^|]*\| `(\w+)` \|$",
        API_DOC.read_text(),
        flags=re.MULTILINE,
    )
    assert len(rows) >= 20
    documented = {code: class_name for codes, class_name in rows for code in re.findall(r"`([A-Z_]+)`", codes)}
    assert set(documented) == set(ERROR_CODE_TABLE)
    for code, class_name in documented.items():
        assert ERROR_CODE_TABLE[code] is getattr(workspace_sdk, class_name), code


def test_the_code_decides_not_the_status() -> None:
    error = error_from_response(500, envelope_body("SANDBOX_NOT_FOUND", sandbox_id="s"))
    assert type(error) is SandboxNotFoundError


def test_unknown_code_is_plain_workspace_error() -> None:
    error = error_from_response(418, envelope_body("TEAPOT", "short and stout"))
    assert type(error) is WorkspaceError
    assert (error.code, error.message, error.status_code) == ("TEAPOT", "short and stout", 418)


@pytest.mark.parametrize("body", [b"<html>Bad Gateway</html>", b"", b"not json", b'{"detail": "no code"}', b"[1]"])
def test_non_envelope_body_becomes_http_status_code(body: bytes) -> None:
    error = error_from_response(502, body, reason="Bad Gateway")
    assert type(error) is WorkspaceError
    assert error.code == "HTTP_502"
    assert error.status_code == 502
    assert error.message.startswith("HTTP 502 Bad Gateway")
    if body:
        assert body.decode() in error.message


def test_details_and_attributes() -> None:
    cases: list[tuple[str, dict[str, Any], str, Any]] = [
        ("SANDBOX_NOT_FOUND", {"sandbox_id": "sbx-1"}, "sandbox_id", "sbx-1"),
        ("TEMPLATE_NOT_FOUND", {"template": "nope:1"}, "template", "nope:1"),
        ("FILE_NOT_FOUND", {"path": "/a"}, "path", "/a"),
        ("FILE_EXISTS", {"path": "/b"}, "path", "/b"),
        ("PERMISSION_DENIED", {"path": "/c"}, "path", "/c"),
        ("PTY_NOT_FOUND", {"pty_id": "pty-1"}, "pty_id", "pty-1"),
        ("PROCESS_NOT_FOUND", {"pid": 42}, "pid", 42),
        ("COMMAND_NOT_FOUND", {"command": "nope"}, "command", "nope"),
        ("AGENT_NOT_CONNECTED", {"sandbox_id": "sbx-2"}, "sandbox_id", "sbx-2"),
        ("SANDBOX_NOT_RUNNING", {"sandbox_id": "s", "state": "stopped"}, "state", "stopped"),
        ("INVALID_REQUEST", {"errors": [{"loc": "x"}]}, "errors", [{"loc": "x"}]),
        ("BUILD_NOT_FOUND", {"build_id": "bld-1"}, "build_id", "bld-1"),
        ("BUILD_FAILED", {"build_id": "bld-2", "step": 3, "line": 7, "exit_code": 2}, "exit_code", 2),
        ("BUILD_TIMEOUT", {"build_id": "bld-3", "step": 1, "line": 4}, "line", 4),
    ]
    for code, details, attribute, value in cases:
        error = error_from_response(400, envelope_body(code, **details))
        assert getattr(error, attribute) == value, code
        assert error.details == details


def test_process_timeout_carries_partial_output() -> None:
    error = error_from_response(408, envelope_body("PROCESS_TIMEOUT", timeout=5, stdout="so far", stderr="warn"))
    assert isinstance(error, ProcessTimeoutError)
    assert (error.timeout, error.stdout, error.stderr) == (5.0, "so far", "warn")


def test_context_fills_gaps_but_server_details_win() -> None:
    error = error_from_envelope(
        {"code": "FILE_NOT_FOUND", "message": "m", "details": {"path": "/server"}},
        context={"sandbox_id": "sbx-1", "path": "/client"},
    )
    assert error.details == {"sandbox_id": "sbx-1", "path": "/server"}
    bare = error_from_envelope({"code": "SANDBOX_NOT_FOUND"}, context={"sandbox_id": "sbx-9"})
    assert isinstance(bare, SandboxNotFoundError)
    assert bare.sandbox_id == "sbx-9"
    assert bare.message == "SANDBOX_NOT_FOUND"


@pytest.mark.parametrize(
    ("cls", "builtin", "errno_value"),
    [
        (FileNotFoundError, builtins.FileNotFoundError, errno.ENOENT),
        (FileExistsError, builtins.FileExistsError, errno.EEXIST),
        (PermissionDeniedError, builtins.PermissionError, errno.EACCES),
        (ProcessTimeoutError, builtins.TimeoutError, errno.ETIMEDOUT),
        (RequestTimeoutError, builtins.TimeoutError, errno.ETIMEDOUT),
        (WaitTimeoutError, builtins.TimeoutError, errno.ETIMEDOUT),
    ],
)
def test_builtin_exception_compatibility(cls: type[WorkspaceError], builtin: type[OSError], errno_value: int) -> None:
    error = cls("went wrong", details={"path": "/workspace/x"})
    assert isinstance(error, WorkspaceError)
    assert isinstance(error, builtin)
    assert isinstance(error, OSError)
    assert error.errno == errno_value
    assert str(error) == f"[{error.code}] went wrong"
    with pytest.raises(builtin):
        raise error


def test_file_errors_expose_filename_like_oserror() -> None:
    error = FileNotFoundError("missing", details={"path": "/workspace/x"})
    assert error.filename == "/workspace/x"


def test_sdk_file_not_found_is_not_builtin_name_clash() -> None:
    assert FileNotFoundError is not builtins.FileNotFoundError
    assert issubclass(FileNotFoundError, builtins.FileNotFoundError)


def test_hand_built_errors_get_their_table_code() -> None:
    assert SandboxNotFoundError("gone").code == "SANDBOX_NOT_FOUND"
    assert ProcessTimeoutError("slow").code == "PROCESS_TIMEOUT"
    assert WorkspaceConnectionError("down").code == "CONNECTION_ERROR"
    assert RequestTimeoutError("slow").code == "REQUEST_TIMEOUT"
    assert WorkspaceError("x").code == "WORKSPACE_ERROR"


def test_hierarchy() -> None:
    for cls in set(ERROR_CODE_TABLE.values()) | {WorkspaceConnectionError, WaitTimeoutError}:
        assert issubclass(cls, WorkspaceError)
        assert issubclass(cls, Exception)
    assert issubclass(RequestTimeoutError, WorkspaceConnectionError)


@pytest.mark.parametrize("cls", [SandboxNotFoundError, FileNotFoundError, ProcessTimeoutError])
def test_errors_pickle_round_trip(cls: type[WorkspaceError]) -> None:
    error = cls("msg", details={"path": "/p", "sandbox_id": "s"}, status_code=404)
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is cls
    assert (clone.code, clone.message, clone.details, clone.status_code) == (
        error.code,
        error.message,
        error.details,
        404,
    )


def test_repr_is_informative() -> None:
    assert repr(SandboxNotFoundError("sandbox x not found")) == (
        "SandboxNotFoundError(code='SANDBOX_NOT_FOUND', message='sandbox x not found')"
    )


def test_transport_errors_name_the_url() -> None:
    url = "http://127.0.0.1:1/api/v1/sandboxes"
    refused = error_from_transport(httpx.ConnectError("[Errno 111] Connection refused"), url)
    assert type(refused) is WorkspaceConnectionError
    assert url in str(refused)
    assert "Connection refused" in str(refused)
    assert refused.url == url

    timed_out = error_from_transport(httpx.ReadTimeout("read timed out"), url)
    assert type(timed_out) is RequestTimeoutError
    assert isinstance(timed_out, builtins.TimeoutError)
    assert url in str(timed_out)
    assert "waiting for the response" in str(timed_out)
