"""Build records and logs under `<data dir>/templates/builds/<id>/` (`build.json`, `log`),
and the step cache (`build-cache.json`: step key -> layer digest).

A record is written with a rename, so a crash leaves the previous version. Logs are bounded:
past `MAX_LOG_BYTES` a build's output is dropped (a marker says so); step headers and the
outcome are still written. The oldest finished builds go when there are over `MAX_BUILDS`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from workspace_server.domain.builds import Build, BuildError, BuildState, BuildStep

MAX_LOG_BYTES = 8 << 20
MAX_BUILDS = 200
MAX_CACHE_ENTRIES = 4096
TRUNCATED = b"\n[workspace: the build log reached its limit; output is dropped from here on]\n"


class BuildStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.cache_path = root.parent / "build-cache.json"
        self._records: dict[str, Build] = {}
        self._log_sizes: dict[str, int] = {}
        self._truncated: set[str] = set()
        self._waiters: dict[str, asyncio.Event] = {}
        self._lock = threading.Lock()
        self._cache: dict[str, str] = {}

    def open(self) -> list[Build]:
        """Load the records; returns those that were building (the caller ends them)."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        for path in self.root.glob("*/build.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                build = _decode(json.loads(path.read_text()))
                self._records[build.id] = build
                self._log_sizes[build.id] = self.log_path(build.id).stat().st_size
        with contextlib.suppress(OSError, ValueError):
            loaded = json.loads(self.cache_path.read_text())
            self._cache = {str(k): str(v) for k, v in loaded.items()} if isinstance(loaded, dict) else {}
        return [b for b in self._records.values() if b.state == BuildState.BUILDING]

    # ------------------------------------------------------------------ records
    def get(self, build_id: str) -> Build | None:
        return self._records.get(build_id)

    def all(self) -> list[Build]:
        return sorted(self._records.values(), key=lambda b: b.created_at, reverse=True)

    def put(self, build: Build) -> None:
        directory = self.root / build.id
        directory.mkdir(mode=0o700, exist_ok=True)
        build.log_bytes = self._log_sizes.get(build.id, 0)
        partial = directory / "build.json.partial"
        partial.write_text(json.dumps(asdict(build)))
        os.rename(partial, directory / "build.json")
        self._records[build.id] = build
        self._wake(build.id)

    def remove(self, build_id: str) -> None:
        self._records.pop(build_id, None)
        self._log_sizes.pop(build_id, None)
        shutil.rmtree(self.root / build_id, ignore_errors=True)
        self._wake(build_id)

    def prune(self) -> None:
        finished = [b for b in self.all() if b.state != BuildState.BUILDING]
        for build in finished[MAX_BUILDS:]:
            self.remove(build.id)

    # ------------------------------------------------------------------ logs
    def log_path(self, build_id: str) -> Path:
        return self.root / build_id / "log"

    def log_size(self, build_id: str) -> int:
        return self._log_sizes.get(build_id, 0)

    def append_log(self, build_id: str, data: bytes, *, always: bool = False) -> None:
        """Append to the build's log; `always`: step headers and outcomes, kept past the limit."""
        size = self._log_sizes.get(build_id, 0)
        if not always and size + len(data) > MAX_LOG_BYTES:
            if build_id in self._truncated:
                return
            self._truncated.add(build_id)
            data = TRUNCATED
        with open(self.log_path(build_id), "ab") as log:
            log.write(data)
        self._log_sizes[build_id] = size + len(data)
        self._wake(build_id)

    def read_log(self, build_id: str, offset: int, limit: int = 1 << 20) -> bytes:
        try:
            with open(self.log_path(build_id), "rb") as log:
                log.seek(offset)
                return log.read(limit)
        except OSError:
            return b""

    def changed(self, build_id: str) -> asyncio.Event:
        """Set at the next change of the build's log or record."""
        return self._waiters.setdefault(build_id, asyncio.Event())

    def _wake(self, build_id: str) -> None:
        event = self._waiters.pop(build_id, None)
        if event is not None:
            event.set()

    # ------------------------------------------------------------------ step cache
    def cached_layer(self, key: str) -> str | None:
        return self._cache.get(key)

    def remember(self, key: str, layer: str) -> None:
        with self._lock:
            self._cache.pop(key, None)
            self._cache[key] = layer  # newest last: the oldest go first past the bound
            while len(self._cache) > MAX_CACHE_ENTRIES:
                self._cache.pop(next(iter(self._cache)))
            partial = self.cache_path.with_suffix(".partial")
            partial.write_text(json.dumps(self._cache))
            os.rename(partial, self.cache_path)


def _decode(data: dict[str, Any]) -> Build:
    error = data.get("error")
    return Build(
        id=str(data["id"]),
        template=str(data["template"]),
        base=str(data.get("base", "")),
        state=BuildState(data["state"]),
        created_at=str(data["created_at"]),
        updated_at=str(data.get("updated_at", data["created_at"])),
        steps=[BuildStep(**step) for step in data.get("steps") or []],
        error=BuildError(**error) if isinstance(error, dict) else None,
        digest=data.get("digest"),
        log_bytes=int(data.get("log_bytes", 0)),
        sandbox_id=data.get("sandbox_id"),
    )
