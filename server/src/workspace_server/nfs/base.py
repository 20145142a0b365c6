"""What the sandbox service needs from an NFS export manager (nfs/exports.py is the one)."""

from __future__ import annotations

from typing import Protocol


class WorkspaceExports(Protocol):
    async def start(self) -> None:
        """Start serving (before any sandbox is exported)."""
        ...

    async def close(self) -> None:
        """Stop serving: no export is left reachable."""
        ...

    async def export(self, sandbox_id: str) -> None:
        """Serve the running sandbox's /workspace (idempotent)."""
        ...

    async def withdraw(self, sandbox_id: str) -> None:
        """Stop serving it; when this returns no client can reach it and nothing holds its
        files open (its disk can be unmounted). Idempotent."""
        ...

    def url(self, sandbox_id: str) -> str | None:
        """Where clients mount it, while it is exported."""
        ...
