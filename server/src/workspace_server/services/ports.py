"""Ports of sandboxes: tunnels into them, which ones are public, and their preview URLs."""

from __future__ import annotations

import collections
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from workspace_server.agent_link.tunnel import PortTunnel
from workspace_server.domain.errors import InvalidRequest, ResourceExhausted
from workspace_server.domain.previews import (
    MAX_TOKEN_SECONDS,
    TOKEN_PARAM,
    PreviewAddress,
    PreviewTokens,
    preview_host,
)
from workspace_server.services.lifecycle import LifecycleService
from workspace_server.services.sandboxes import SandboxService
from workspace_server.store.sqlite import SandboxStore

# Kept among a sandbox's public ports (0 is no port of its own): every port is public, as
# E2B makes a sandbox's ports unless it is created with allowPublicTraffic false.
EVERY_PORT = 0


@dataclass(frozen=True)
class PreviewUrl:
    url: str
    sandbox_id: str
    port: int
    public: bool
    token: str | None
    expires_at: float | None


@dataclass(frozen=True)
class PreviewSite:
    """Where preview URLs point: `{scheme}://{port}-{id}.{domain}[:{port}]`."""

    domain: str
    scheme: str
    port: int | None  # None: the scheme's default port

    def url(self, address: PreviewAddress) -> str:
        suffix = f":{self.port}" if self.port else ""
        return f"{self.scheme}://{preview_host(address, self.domain)}{suffix}/"

    @property
    def host_suffix(self) -> str:
        """What follows `{port}-{id}.` in a preview host: the domain and the port, if any
        (E2B's sandbox `domain`, from which its SDK's `get_host` builds the same host)."""
        return f"{self.domain}:{self.port}" if self.port else self.domain


def load_preview_key(path: Path) -> bytes:
    """The server's preview-token key: made once (0600), kept so tokens outlive restarts."""
    try:
        key = path.read_bytes()
        if len(key) >= 32:
            return key
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(32)
    temp = path.with_suffix(".tmp")
    temp.write_bytes(key)
    temp.chmod(0o600)
    temp.replace(path)
    return key


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise InvalidRequest(f"port must be from 1 to 65535, not {port}", port=port)


class PortService:
    """Opens tunnels to ports on a sandbox's loopback (at most `max_tunnels` at once per
    sandbox), keeps which ports are public, and signs preview URLs."""

    def __init__(
        self,
        sandboxes: SandboxService,
        lifecycle: LifecycleService,
        store: SandboxStore,
        tokens: PreviewTokens,
        site: PreviewSite,
        max_tunnels: int,
    ) -> None:
        self.sandboxes = sandboxes
        self.lifecycle = lifecycle
        self.store = store
        self.tokens = tokens
        self.site = site
        self.max_tunnels = max_tunnels
        self._open: collections.Counter[str] = collections.Counter()

    @contextlib.asynccontextmanager
    async def tunnel(self, sandbox_id: str, port: int) -> AsyncIterator[PortTunnel]:
        """A tunnel to the port, closed on exit; a paused sandbox is resumed first (auto_resume)."""
        check_port(port)
        if self._open[sandbox_id] >= self.max_tunnels:
            raise ResourceExhausted(
                f"sandbox {sandbox_id} already has {self.max_tunnels} open port connections; close some and retry",
                sandbox_id=sandbox_id,
            )
        self._open[sandbox_id] += 1
        try:
            async with self.lifecycle.command_start(sandbox_id):
                tunnel = await self.sandboxes.agent(sandbox_id).connect_port(port)
            try:
                yield tunnel
            finally:
                tunnel.close()
        finally:
            self._open[sandbox_id] -= 1
            if not self._open[sandbox_id]:
                del self._open[sandbox_id]

    def open_tunnels(self, sandbox_id: str) -> int:
        return self._open[sandbox_id]

    # ------------------------------------------------------------------ public ports
    def public_ports(self, sandbox_id: str) -> list[int]:
        self.sandboxes.record(sandbox_id)  # SANDBOX_NOT_FOUND
        return [port for port in self.store.public_ports(sandbox_id) if port != EVERY_PORT]

    def set_public(self, sandbox_id: str, port: int, public: bool) -> list[int]:
        check_port(port)
        self.sandboxes.record(sandbox_id)
        self.store.set_port_public(sandbox_id, port, public)
        return self.public_ports(sandbox_id)

    def every_port_public(self, sandbox_id: str) -> bool:
        """True if the sandbox was made with all of its ports public (E2B's default)."""
        return EVERY_PORT in self.store.public_ports(sandbox_id)

    def make_every_port_public(self, sandbox_id: str) -> None:
        self.sandboxes.record(sandbox_id)
        self.store.set_port_public(sandbox_id, EVERY_PORT, True)

    def is_public(self, address: PreviewAddress) -> bool:
        ports = self.store.public_ports(address.sandbox_id)
        return address.port in ports or EVERY_PORT in ports

    # ------------------------------------------------------------------ preview URLs
    def preview_url(self, sandbox_id: str, port: int, public: bool, seconds: int) -> PreviewUrl:
        """A ready URL: public ports need no token; private ones carry a signed one."""
        check_port(port)
        if not 1 <= seconds <= MAX_TOKEN_SECONDS:
            raise InvalidRequest(f"expires_in must be from 1 to {MAX_TOKEN_SECONDS} seconds", expires_in=seconds)
        self.sandboxes.record(sandbox_id)
        address = PreviewAddress(sandbox_id, port)
        if public:
            self.store.set_port_public(sandbox_id, port, True)
        url = self.site.url(address)
        if public or self.is_public(address):
            return PreviewUrl(url, sandbox_id, port, True, None, None)
        token, expires = self.tokens.issue(address, seconds)
        return PreviewUrl(f"{url}?{TOKEN_PARAM}={token}", sandbox_id, port, False, token, expires)
