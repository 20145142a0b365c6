"""The error code -> HTTP status table (api/errors.py) against docs/api.md and the codes
the domain and the agent raise (the SDK's test_sdk_errors.py checks its own side)."""

from __future__ import annotations

import re
from pathlib import Path

from workspace_server.agent.errors import ERRNO_CODES
from workspace_server.api.errors import HTTP_CODES, HTTP_STATUS, http_status
from workspace_server.domain import errors

API_DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def documented_statuses() -> dict[str, int]:
    """docs/api.md's error table: | `CODE` [/ `CODE`] | status | details | SDK class |"""
    rows = re.findall(
        r"^\| (`[A-Z_]+`(?: / `[A-Z_]+`)*) \| (\d+) \|[^|]*\| `\w+` \|$", API_DOC.read_text(), flags=re.MULTILINE
    )
    assert len(rows) >= 20, "the error table in docs/api.md was not found"
    return {code: int(status) for codes, status in rows for code in re.findall(r"`([A-Z_]+)`", codes)}


def test_status_table_matches_docs_api_md() -> None:
    assert documented_statuses() == HTTP_STATUS


def test_every_domain_error_has_a_documented_status() -> None:
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.WorkspaceError)]
    assert len(classes) > 5
    for cls in classes:
        assert cls.code in HTTP_STATUS, cls


def test_every_code_the_agent_sends_is_documented() -> None:
    assert set(ERRNO_CODES.values()) <= set(HTTP_STATUS)


def test_codes_for_framework_statuses_are_documented() -> None:
    for status, code in HTTP_CODES.items():
        assert code in HTTP_STATUS, status


def test_status_follows_the_code() -> None:
    assert http_status(errors.SandboxNotFound("sbx-1")) == 404
    assert http_status(errors.WorkspaceError("x", code="DISK_QUOTA_EXCEEDED")) == 507
    assert http_status(errors.WorkspaceError("x", code="SOMETHING_NEW")) == 500
