"""``AsyncWorkspaceClient``: the entry point; one connection pool, one attribute per resource."""

from __future__ import annotations

from types import TracebackType

import httpx

from .._config import DEFAULT_TIMEOUT, ClientConfig
from ._api_client import AsyncAPIClient
from .filesystem import AsyncFileSystemService
from .process import AsyncProcessService
from .pty import AsyncPtyService
from .sandbox import AsyncSandboxService
from .template import AsyncTemplateService


class AsyncWorkspaceClient:
    """Client for a Workspace server.

    Args:
        api_url: server base URL. Defaults to ``$WORKSPACE_API_URL``, then
            ``http://localhost:8080``.
        api_key: API key, sent as ``Authorization: Bearer``. Defaults to
            ``$WORKSPACE_API_KEY``; none is sent if neither is set.
        timeout: seconds each HTTP request may take (connect, send, and each wait for
            data). ``process.run`` extends it to cover the command's own timeout, and
            event streams tolerate idle periods between server keepalives.
        http_client: an ``httpx.AsyncClient`` to use instead of creating one (for custom
            transports, proxies or certificates). The SDK does not close a client it was given.

    Use it as a context manager, or call ``aclose()``, to release its connections. One client
    is meant to be shared: the blocking client between threads, the asyncio client between
    tasks (``asyncio.gather``).
    """

    def __init__(
        self,
        api_url: str | None = None,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        *,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self._api = AsyncAPIClient(ClientConfig.resolve(api_url, api_key, timeout), http_client)
        self.sandbox = AsyncSandboxService(self._api)
        self.process = AsyncProcessService(self._api)
        self.filesystem = AsyncFileSystemService(self._api)
        self.pty = AsyncPtyService(self._api)
        self.template = AsyncTemplateService(self._api)

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

    async def aclose(self) -> None:
        """Close open PTY sessions and the connection pool. Idempotent."""
        await self._api.aclose()

    async def __aenter__(self) -> AsyncWorkspaceClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} api_url={self.api_url!r}>"
