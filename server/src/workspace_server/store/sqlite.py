"""Sandbox state in SQLite (WAL mode), under the data dir. Survives restarts.

Calls are short and local, so they run inline on the event loop; one connection is
shared and serialised by a lock.
"""

from __future__ import annotations

import builtins
import json
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workspace_server.domain.errors import StorageError
from workspace_server.domain.models import OnTimeout, ResourceLimits, Sandbox, SandboxState

SCHEMA = """
CREATE TABLE IF NOT EXISTS sandboxes (
    id TEXT PRIMARY KEY,
    template TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    name TEXT,
    env TEXT NOT NULL,
    metadata TEXT NOT NULL,
    timeout INTEGER,
    expires_at REAL,
    error_message TEXT,
    cpu REAL NOT NULL,
    memory_mb INTEGER NOT NULL,
    pids INTEGER NOT NULL,
    disk_mb INTEGER NOT NULL,
    network INTEGER NOT NULL,
    host_pid INTEGER
);
CREATE INDEX IF NOT EXISTS sandboxes_state ON sandboxes(state);
CREATE TABLE IF NOT EXISTS public_ports (
    sandbox_id TEXT NOT NULL,
    port INTEGER NOT NULL,
    PRIMARY KEY (sandbox_id, port)
);
"""

# Columns added after the first release, with their definitions: a data dir made by an
# older server gets them on open (ALTER TABLE ... ADD COLUMN, defaults as the old behaviour).
ADDED_COLUMNS = {
    "on_timeout": "TEXT NOT NULL DEFAULT 'delete'",
    "idle_timeout": "INTEGER",
    "auto_resume": "INTEGER NOT NULL DEFAULT 1",
    "started_at": "TEXT",
}

COLUMNS = [
    "id",
    "template",
    "state",
    "created_at",
    "updated_at",
    "name",
    "env",
    "metadata",
    "timeout",
    "expires_at",
    "error_message",
    "cpu",
    "memory_mb",
    "pids",
    "disk_mb",
    "network",
    "host_pid",
    *ADDED_COLUMNS,
]


def _to_row(sandbox: Sandbox) -> tuple[Any, ...]:
    return (
        sandbox.id,
        sandbox.template,
        sandbox.state.value,
        sandbox.created_at,
        sandbox.updated_at,
        sandbox.name,
        json.dumps(sandbox.env),
        json.dumps(sandbox.metadata),
        sandbox.timeout,
        sandbox.expires_at,
        sandbox.error_message,
        sandbox.limits.cpu,
        sandbox.limits.memory_mb,
        sandbox.limits.pids,
        sandbox.limits.disk_mb,
        int(sandbox.network),
        sandbox.host_pid,
        sandbox.on_timeout.value,
        sandbox.idle_timeout,
        int(sandbox.auto_resume),
        sandbox.started_at,
    )


def _from_row(row: sqlite3.Row) -> Sandbox:
    return Sandbox(
        id=row["id"],
        template=row["template"],
        state=SandboxState(row["state"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        name=row["name"],
        env=json.loads(row["env"]),
        metadata=json.loads(row["metadata"]),
        timeout=row["timeout"],
        expires_at=row["expires_at"],
        error_message=row["error_message"],
        limits=ResourceLimits(cpu=row["cpu"], memory_mb=row["memory_mb"], pids=row["pids"], disk_mb=row["disk_mb"]),
        network=bool(row["network"]),
        host_pid=row["host_pid"],
        on_timeout=OnTimeout(row["on_timeout"]),
        idle_timeout=row["idle_timeout"],
        auto_resume=bool(row["auto_resume"]),
        started_at=row["started_at"],
    )


class SandboxStore:
    """The sandbox records, in SQLite (WAL): they outlive the server."""

    def __init__(self, path: Path, on_full: Callable[[], bool] | None = None) -> None:
        """`on_full()`: called when a write fails on a full file system; True if it freed
        room (the data dir's ballast), and the write is tried once more."""
        self.path = path
        self._on_full = on_full
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)
            present = {row["name"] for row in self._db.execute("PRAGMA table_info(sandboxes)")}
            for column, definition in ADDED_COLUMNS.items():
                if column not in present:
                    self._db.execute(f"ALTER TABLE sandboxes ADD COLUMN {column} {definition}")
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the state database {path}: {exc}") from exc

    def _execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            try:
                return self._transaction(sql, params)
            except sqlite3.OperationalError as exc:
                if self._on_full is None or not self._on_full():
                    raise StorageError(f"state database error: {exc}") from exc
            except sqlite3.Error as exc:
                raise StorageError(f"state database error: {exc}") from exc
            try:  # the file system was full, and room was made
                return self._transaction(sql, params)
            except sqlite3.Error as exc:
                raise StorageError(f"state database error: {exc}") from exc

    def _transaction(self, sql: str, params: tuple[Any, ...]) -> list[sqlite3.Row]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            rows = self._db.execute(sql, params).fetchall()
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL)
                self._db.execute("ROLLBACK")
            raise
        return rows

    def put(self, sandbox: Sandbox) -> None:
        placeholders = ",".join("?" * len(COLUMNS))
        self._execute(
            f"INSERT OR REPLACE INTO sandboxes ({','.join(COLUMNS)}) VALUES ({placeholders})", _to_row(sandbox)
        )

    def get(self, sandbox_id: str) -> Sandbox | None:
        rows = self._execute("SELECT * FROM sandboxes WHERE id = ?", (sandbox_id,))
        return _from_row(rows[0]) if rows else None

    def list(self, state: SandboxState | None = None) -> list[Sandbox]:
        if state is None:
            rows = self._execute("SELECT * FROM sandboxes ORDER BY created_at")
        else:
            rows = self._execute("SELECT * FROM sandboxes WHERE state = ? ORDER BY created_at", (state.value,))
        return [_from_row(row) for row in rows]

    def delete(self, sandbox_id: str) -> None:
        self._execute("DELETE FROM sandboxes WHERE id = ?", (sandbox_id,))
        self._execute("DELETE FROM public_ports WHERE sandbox_id = ?", (sandbox_id,))

    def public_ports(self, sandbox_id: str) -> builtins.list[int]:
        """The ports of the sandbox whose preview URLs need no token."""
        rows = self._execute("SELECT port FROM public_ports WHERE sandbox_id = ? ORDER BY port", (sandbox_id,))
        return [int(row["port"]) for row in rows]

    def set_port_public(self, sandbox_id: str, port: int, public: bool) -> None:
        if public:
            self._execute("INSERT OR IGNORE INTO public_ports (sandbox_id, port) VALUES (?, ?)", (sandbox_id, port))
        else:
            self._execute("DELETE FROM public_ports WHERE sandbox_id = ? AND port = ?", (sandbox_id, port))

    def close(self) -> None:
        with self._lock:
            self._db.close()
