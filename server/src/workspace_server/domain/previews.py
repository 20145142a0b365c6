"""Preview URLs: which sandbox port a host name addresses, and the signed tokens that open it.

A token is `base64url(json{"s": sandbox_id, "p": port, "e": expiry}) "." base64url(hmac)`,
signed with the server's preview key (HMAC-SHA256). It opens one port of one sandbox until
it expires; nothing about it is stored, so tokens survive restarts and cost nothing to check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import time
from dataclasses import dataclass

TOKEN_PARAM = "workspace_token"  # the query parameter a preview URL carries its token in
COOKIE_NAME = "workspace_preview"  # where the browser keeps it afterwards (host-only)
MAX_TOKEN_SECONDS = 7 * 24 * 3600
DEFAULT_TOKEN_SECONDS = 3600
_HOST = re.compile(r"^(?P<port>[1-9][0-9]{0,4})-(?P<sandbox>sbx-[a-z0-9]+)\.(?P<domain>.+)$")


@dataclass(frozen=True)
class PreviewAddress:
    sandbox_id: str
    port: int


def parse_preview_host(host: str, domain: str) -> PreviewAddress | None:
    """`3000-sbx-ab12.localhost:8080` -> (sbx-ab12, 3000) when `domain` is `localhost`."""
    name = host.strip().lower()
    if name.startswith("["):
        return None
    name = name.rsplit(":", 1)[0] if ":" in name else name
    match = _HOST.match(name)
    if match is None or match["domain"] != domain.lower().strip("."):
        return None
    port = int(match["port"])
    return PreviewAddress(match["sandbox"], port) if port <= 65535 else None


def preview_host(address: PreviewAddress, domain: str) -> str:
    return f"{address.port}-{address.sandbox_id}.{domain}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PreviewTokens:
    """Signs and checks preview tokens with one secret key."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the preview key must be at least 32 bytes")
        self._key = key

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode(), hashlib.sha256).digest())

    def issue(self, address: PreviewAddress, seconds: int, now: float | None = None) -> tuple[str, float]:
        # Rounded up: a token is good for at least the seconds asked (truncating made a
        # 1-second token issued late in a second last only milliseconds).
        expires = math.ceil((time.time() if now is None else now) + seconds)
        body = _b64(
            json.dumps({"s": address.sandbox_id, "p": address.port, "e": expires}, separators=(",", ":")).encode()
        )
        return f"{body}.{self._sign(body)}", float(expires)

    def check(self, token: str, address: PreviewAddress, now: float | None = None) -> str | None:
        """None if `token` opens `address` now, else why not (for the error message)."""
        body, dot, signature = token.partition(".")
        if not dot or not hmac.compare_digest(signature.encode(), self._sign(body).encode()):
            return "the preview token is not valid"
        try:
            claims = json.loads(_unb64(body))
            sandbox_id, port, expires = str(claims["s"]), int(claims["p"]), float(claims["e"])
        except (ValueError, KeyError, TypeError, binascii.Error):
            return "the preview token is not valid"
        if (sandbox_id, port) != (address.sandbox_id, address.port):
            return "the preview token is for another sandbox or port"
        if expires <= (time.time() if now is None else now):
            return "the preview token has expired"
        return None
