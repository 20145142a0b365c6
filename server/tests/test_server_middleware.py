from __future__ import annotations

import pytest

from workspace_server.api.middleware import hostname_of


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8080", "127.0.0.1"),
        ("localhost", "localhost"),
        ("[::1]:8080", "::1"),
        ("http://attacker.example:8080", "attacker.example"),
        ("https://LOCALHOST", "localhost"),
        ("::1", "::1"),
    ],
)
def test_hostname_of(value: str, expected: str) -> None:
    assert hostname_of(value) == expected
