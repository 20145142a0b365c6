from __future__ import annotations

import sqlite3
from pathlib import Path

from workspace_server.domain.models import ResourceLimits, Sandbox, SandboxState
from workspace_server.store.sqlite import SandboxStore


def record(sandbox_id: str, state: SandboxState = SandboxState.RUNNING) -> Sandbox:
    return Sandbox(
        id=sandbox_id,
        template="default",
        state=state,
        created_at="2026-01-01T00:00:00Z",
        updated_at="2026-01-01T00:00:00Z",
        limits=ResourceLimits(),
        env={"A": "1"},
        metadata={"k": "v"},
        timeout=5,
        expires_at=123.5,
    )


def test_round_trip_and_filter(tmp_path: Path) -> None:
    store = SandboxStore(tmp_path / "state.db")
    store.put(record("a"))
    store.put(record("b", SandboxState.ERROR))
    assert store.get("a") == record("a")
    assert [s.id for s in store.list(SandboxState.ERROR)] == ["b"]
    store.delete("a")
    assert store.get("a") is None
    store.close()


def test_state_survives_reopen_in_wal_mode(tmp_path: Path) -> None:
    store = SandboxStore(tmp_path / "state.db")
    store.put(record("a"))
    store.close()
    assert SandboxStore(tmp_path / "state.db").get("a") == record("a")
    mode = sqlite3.connect(tmp_path / "state.db").execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"
