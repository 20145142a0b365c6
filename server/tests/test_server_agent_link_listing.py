"""The host's check of each directory-listing line a (possibly hostile) agent sends."""

from __future__ import annotations

import json
from typing import Any

import pytest

from workspace_server.agent_link.listing import MAX_ENTRY_LINE, MAX_NAME, MAX_PATH, checked_entries, checked_entry
from workspace_server.domain.errors import AgentNotConnected

GOOD: dict[str, Any] = {
    "name": "a",
    "path": "/workspace/a",
    "type": "file",
    "size": 3,
    "modified_at": "2026-01-01T00:00:00.000000Z",
    "mode": "0644",
}


def line(**changes: Any) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def test_a_valid_entry_is_kept_with_its_fields_only() -> None:
    assert checked_entry("sb", line(extra="x" * 100)) == GOOD


def test_lines_are_decoded_together_and_each_checked() -> None:
    assert checked_entries("sb", [line(name="a"), line(name="b")]) == [GOOD, {**GOOD, "name": "b"}]
    with pytest.raises(AgentNotConnected):
        checked_entries("sb", [line(), line(type="socket")])


@pytest.mark.parametrize(
    "changes",
    [
        {"name": ""},
        {"name": "n" * (MAX_NAME + 1)},
        {"name": 3},
        {"path": "/" + "p" * MAX_PATH},
        {"type": "socket"},
        {"size": -1},
        {"size": True},
        {"size": 2**63},
        {"modified_at": "x" * 65},
        {"mode": ["0644"]},
    ],
)
def test_an_entry_out_of_bounds_ends_the_listing(changes: dict[str, Any]) -> None:
    with pytest.raises(AgentNotConnected):
        checked_entry("sb", line(**changes))


@pytest.mark.parametrize(
    "raw", [b"not json", b"[1, 2]", b"", line() + b"," + line(), line() + b"]", b"{" + b" " * MAX_ENTRY_LINE + b"}"]
)
def test_a_malformed_line_ends_the_listing(raw: bytes) -> None:
    with pytest.raises(AgentNotConnected):
        checked_entry("sb", raw)
