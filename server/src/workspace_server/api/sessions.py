"""Console sign-in sessions: the API key is exchanged once for a random token kept in an
HttpOnly, SameSite=Strict cookie. Tokens live in memory (a restart signs everyone out) and
expire after `Settings.session_seconds`."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable

COOKIE_NAME = "workspace_session"
MAX_SESSIONS = 10_000


def _digest(token: str) -> bytes:
    # Only digests are kept, so the table in memory holds nothing a caller could present.
    return hashlib.sha256(token.encode()).digest()


class SessionStore:
    def __init__(self, lifetime_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.lifetime_seconds = lifetime_seconds
        self._clock = clock
        self._expiry: dict[bytes, float] = {}

    def create(self) -> str:
        now = self._clock()
        if len(self._expiry) >= MAX_SESSIONS:
            self._expiry = {digest: expiry for digest, expiry in self._expiry.items() if expiry > now}
            while len(self._expiry) >= MAX_SESSIONS:  # all still valid: the oldest goes
                del self._expiry[min(self._expiry, key=self._expiry.__getitem__)]
        token = secrets.token_urlsafe(32)
        self._expiry[_digest(token)] = now + self.lifetime_seconds
        return token

    def valid(self, token: str) -> bool:
        digest = _digest(token)
        expiry = self._expiry.get(digest)
        if expiry is None:
            return False
        if expiry <= self._clock():
            del self._expiry[digest]
            return False
        return True

    def revoke(self, token: str) -> None:
        self._expiry.pop(_digest(token), None)


def cookie_value(cookie_header: str | None, name: str = COOKIE_NAME) -> str | None:
    """The value of one cookie in a `Cookie` header (without a full parser's leniency)."""
    if not cookie_header:
        return None
    for part in cookie_header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None


def set_cookie_header(token: str, max_age: int, secure: bool) -> str:
    attributes = [f"{COOKIE_NAME}={token}", "Path=/", f"Max-Age={max_age}", "HttpOnly", "SameSite=Strict"]
    if secure:
        attributes.append("Secure")
    return "; ".join(attributes)


def clear_cookie_header(secure: bool) -> str:
    return set_cookie_header("", 0, secure)
