from __future__ import annotations

from workspace_server.domain import errors


def test_envelope_shape() -> None:
    error = errors.SandboxNotFound("sbx-1")
    assert error.envelope() == {
        "code": "SANDBOX_NOT_FOUND",
        "message": "sandbox sbx-1 not found",
        "details": {"sandbox_id": "sbx-1"},
    }


def test_a_code_given_at_raise_time_wins() -> None:
    error = errors.WorkspaceError("gone", code="FILE_NOT_FOUND", path="/x")
    assert (error.code, error.details) == ("FILE_NOT_FOUND", {"path": "/x"})
