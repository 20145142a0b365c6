"""Client configuration and the request policies derived from it (pure: no I/O).

Both clients resolve their arguments here, and every timeout the SDK sets comes from one of
the policy methods below, so the sync and async clients cannot drift apart.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx

from ._version import __version__

__all__ = ["ClientConfig"]

ENV_API_URL = "WORKSPACE_API_URL"
ENV_API_KEY = "WORKSPACE_API_KEY"
DEFAULT_API_URL = "http://localhost:8080"
DEFAULT_TIMEOUT = 60.0
API_PREFIX = "/api/v1"

# The server writes ": keepalive" on idle event streams every 15 s; allowing two intervals
# means a healthy stream never trips the read timeout while a dead one is noticed quickly.
SERVER_KEEPALIVE_INTERVAL = 15.0
STREAM_READ_TIMEOUT_FLOOR = 2 * SERVER_KEEPALIVE_INTERVAL

# Extra time granted to a ``process.run`` request beyond the command's own timeout: the server
# needs a moment to kill the process group and send the PROCESS_TIMEOUT response, which is
# much more useful to the caller than a client-side ReadTimeout.
COMMAND_TIMEOUT_MARGIN = 10.0

USER_AGENT = f"workspace-sdk-python/{__version__}"


@dataclass(frozen=True)
class ClientConfig:
    """Resolved client settings. ``api_url`` has no trailing slash."""

    api_url: str
    api_key: str | None
    timeout: float

    @classmethod
    def resolve(cls, api_url: str | None, api_key: str | None, timeout: float) -> ClientConfig:
        """Apply defaults: arguments, then ``WORKSPACE_API_URL``/``WORKSPACE_API_KEY``, then
        ``http://localhost:8080`` and no key."""
        url = api_url or os.environ.get(ENV_API_URL) or DEFAULT_API_URL
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"api_url must be an http:// or https:// URL, got {url!r}")
        if (
            isinstance(timeout, bool)
            or not isinstance(timeout, (int, float))
            or not (timeout > 0 and math.isfinite(timeout))
        ):
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        key = api_key if api_key is not None else os.environ.get(ENV_API_KEY)
        return cls(api_url=url.rstrip("/"), api_key=key or None, timeout=float(timeout))

    def url(self, path: str) -> str:
        """Absolute URL of an API route given relative to ``/api/v1``."""
        return f"{self.api_url}{API_PREFIX}{path}"

    def websocket_url(self, path: str, params: Mapping[str, str]) -> str:
        """``ws://``/``wss://`` URL of an API route, with query parameters."""
        parts = urlsplit(self.url(path))
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, parts.path, urlencode(dict(params)), ""))

    @property
    def headers(self) -> dict[str, str]:
        """Headers sent with every request (HTTP and WebSocket handshake)."""
        headers = {"User-Agent": USER_AGENT}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def request_timeout(self) -> httpx.Timeout:
        """Ordinary request/response calls: the client timeout bounds each phase."""
        return httpx.Timeout(self.timeout)

    def command_timeout(self, command_timeout: float | None) -> httpx.Timeout:
        """``process.run``: wait at least as long as the command may run, plus a margin, so
        the server's PROCESS_TIMEOUT arrives before the client gives up."""
        if command_timeout is None:
            return self.request_timeout()
        read = max(self.timeout, float(command_timeout) + COMMAND_TIMEOUT_MARGIN)
        return httpx.Timeout(self.timeout, read=read)

    def stream_timeout(self) -> httpx.Timeout:
        """Event streams: a quiet process is normal, so only a stream silent for longer than
        two keepalive intervals (or the client timeout, if longer) counts as dead."""
        return httpx.Timeout(self.timeout, read=max(self.timeout, STREAM_READ_TIMEOUT_FLOOR))
