"""The envd access token a create returns: an HMAC of the sandbox id under a server secret
kept in the data directory, so it survives restarts and needs no table."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import Iterable
from pathlib import Path


class AccessTokens:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "e2b-token-secret"
        self._secret: bytes | None = None

    def _key(self) -> bytes:
        if self._secret is None:
            try:
                self._secret = self.path.read_bytes()
            except FileNotFoundError:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as handle:
                    handle.write(secrets.token_bytes(32))
                self._secret = self.path.read_bytes()
        return self._secret

    def token(self, sandbox_id: str) -> str:
        return hmac.new(self._key(), sandbox_id.encode(), hashlib.sha256).hexdigest()

    def valid(self, sandbox_id: str, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token.encode(), self.token(sandbox_id).encode())

    def sandbox_for(self, token: str, sandbox_ids: Iterable[str]) -> str | None:
        return next((i for i in sandbox_ids if self.valid(i, token)), None)
