# Generated from _async/client.py by scripts/unasync.py. Do not edit: edit that file.
"""``WorkspaceClient``: the entry point; one connection pool, one attribute per resource."""

from __future__ import annotations

from types import TracebackType

import httpx

from .._config import DEFAULT_TIMEOUT, ClientConfig
from ._api_client import APIClient
from .filesystem import FileSystemService
from .process import ProcessService
from .pty import PtyService
from .sandbox import SandboxService
from .template import TemplateService


class WorkspaceClient:
    """Client for a Workspace server.

    Args:
        api_url: server base URL. Defaults to ``$WORKSPACE_API_URL``, then
            ``http://localhost:8080``.
        api_key: API key, sent as ``Authorization: Bearer``. Defaults to
            ``$WORKSPACE_API_KEY``; none is sent if neither is set.
        timeout: seconds each HTTP request may take (connect, send, and each wait for
            data). ``process.run`` extends it to cover the command's own timeout, and
            event streams tolerate idle periods between server keepalives.
        http_client: an ``httpx.Client`` to use instead of creating one (for custom
            transports, proxies or certificates). The SDK does not close a client it was given.

    Use it as a context manager, or call ``close()``, to release its connections. One client
    is meant to be shared: the blocking client between threads, the asyncio client between
    tasks (``asyncio.gather``).
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        http_client: httpx.Client | None = None,
    ) -> None:
        self._api = APIClient(ClientConfig.resolve(api_url, api_key, timeout), http_client)
        self.sandbox = SandboxService(self._api)
        self.process = ProcessService(self._api)
        self.filesystem = FileSystemService(self._api)
        self.pty = PtyService(self._api)
        self.template = TemplateService(self._api)

    @property
    def api_url(self) -> str:
        """The server base URL in use."""
        return self._api.config.api_url

    @property
    def timeout(self) -> float:
        """The per-request timeout in seconds."""
        return self._api.config.timeout

    @property
    def closed(self) -> bool:
        return self._api.closed

    def close(self) -> None:
        """Close open PTY sessions and the connection pool. Idempotent."""
        self._api.close()

    def __enter__(self) -> WorkspaceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} api_url={self.api_url!r}>"
