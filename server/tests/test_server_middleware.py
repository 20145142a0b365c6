from __future__ import annotations

import pytest

from workspace_server.api import sessions
from workspace_server.api.middleware import hostname_of, same_origin
from workspace_server.api.sessions import SessionStore, cookie_value, set_cookie_header


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


def http_scope(origin: str | None, host: str = "127.0.0.1:8080", scheme: str = "http") -> dict[str, object]:
    headers = [(b"host", host.encode())]
    if origin is not None:
        headers.append((b"origin", origin.encode()))
    return {"type": "http", "scheme": scheme, "headers": headers}


@pytest.mark.parametrize(
    ("origin", "host", "scheme", "expected"),
    [
        ("http://127.0.0.1:8080", "127.0.0.1:8080", "http", True),
        ("HTTP://127.0.0.1:8080", "127.0.0.1:8080", "http", True),
        ("https://ws.example", "ws.example", "https", True),
        ("https://ws.example", "ws.example", "wss", True),
        ("http://ws.example", "ws.example", "https", False),  # scheme differs
        ("http://127.0.0.1:9090", "127.0.0.1:8080", "http", False),  # another port: same site, other origin
        ("http://localhost:8080", "127.0.0.1:8080", "http", False),
        ("null", "127.0.0.1:8080", "http", False),
        (None, "127.0.0.1:8080", "http", False),
    ],
)
def test_same_origin(origin: str | None, host: str, scheme: str, expected: bool) -> None:
    assert same_origin(http_scope(origin, host, scheme)) is expected


def test_sessions_expire_and_can_be_revoked() -> None:
    now = [1000.0]
    store = SessionStore(60, clock=lambda: now[0])
    first, second = store.create(), store.create()
    assert first != second and store.valid(first) and store.valid(second)
    assert not store.valid(first + "x") and not store.valid("")
    store.revoke(first)
    assert not store.valid(first) and store.valid(second)
    now[0] += 60
    assert not store.valid(second)


def test_session_table_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "MAX_SESSIONS", 3)
    now = [0.0]
    store = SessionStore(10, clock=lambda: now[0])
    tokens = []
    for _ in range(3):
        tokens.append(store.create())
        now[0] += 1
    newest = store.create()  # all still valid: the oldest is dropped
    assert not store.valid(tokens[0]) and store.valid(tokens[1]) and store.valid(newest)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("workspace_session=abc", "abc"),
        ("a=1; workspace_session=abc; b=2", "abc"),
        ("workspace_session_x=abc", None),
        ("xworkspace_session=abc", None),
        ("", None),
        (None, None),
    ],
)
def test_cookie_value(header: str | None, expected: str | None) -> None:
    assert cookie_value(header) == expected


def test_cookie_attributes() -> None:
    assert set_cookie_header("tok", 60, secure=False) == (
        "workspace_session=tok; Path=/; Max-Age=60; HttpOnly; SameSite=Strict"
    )
    assert set_cookie_header("tok", 60, secure=True).endswith("; Secure")
