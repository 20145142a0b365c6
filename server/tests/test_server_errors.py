from __future__ import annotations

from workspace_server.domain import errors


def test_every_error_class_has_a_status() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.WorkspaceError)]
    for cls in classes:
        assert cls.code in errors.HTTP_STATUS, cls


def test_envelope_shape() -> None:
    error = errors.SandboxNotFound("sbx-1")
    assert error.envelope() == {
        "code": "SANDBOX_NOT_FOUND",
        "message": "sandbox sbx-1 not found",
        "details": {"sandbox_id": "sbx-1"},
    }
    assert error.http_status == 404


def test_seed_codes_are_stable() -> None:
    for code in (
        "SANDBOX_NOT_FOUND",
        "TEMPLATE_NOT_FOUND",
        "FILE_NOT_FOUND",
        "PERMISSION_DENIED",
        "PROCESS_TIMEOUT",
        "PTY_NOT_FOUND",
        "AGENT_NOT_CONNECTED",
        "INVALID_REQUEST",
        "UNAUTHORIZED",
    ):
        assert code in errors.HTTP_STATUS
