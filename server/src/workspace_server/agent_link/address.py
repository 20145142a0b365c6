"""Where a sandbox's agent listens: a Unix socket on this host (the local runtime), or a
TCP address in a cluster with the token the agent must prove it holds (Kubernetes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class TcpAgentAddress:
    host: str
    port: int
    sandbox_id: str
    token: str = field(repr=False)
    # agent-sandbox mode: the pod was made unbound; the first handshake names its uid
    bind_pod_uid: str | None = None

    def __str__(self) -> str:
        return f"{self.host}:{self.port} ({self.sandbox_id})"


AgentAddress = Path | TcpAgentAddress
