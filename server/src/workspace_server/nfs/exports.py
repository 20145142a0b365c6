"""One NFS export per running sandbox, kept in step with a supervised nfs-ganesha.

The wanted exports are held here; ganesha's are brought to match them over D-Bus. When
ganesha dies it is started again with every wanted export in its configuration, so a
restart restores them all at once and clients see their exports come back under the same
paths (their file handles go stale and are looked up again)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

from workspace_server.domain.errors import RuntimeFailure
from workspace_server.nfs.ganesha import ExportRejected, GaneshaProcess
from workspace_server.nfs.ganesha_config import Export, export_block, server_config
from workspace_server.nfs.settings import NfsSettings
from workspace_server.runtimes.base import HostWorkspace

log = logging.getLogger(__name__)

MAX_EXPORT_ID = 65535
RESTART_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)


class NfsExports:
    def __init__(self, settings: NfsSettings, state_dir: Path, locate: Callable[[str], HostWorkspace | None]) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.exports_dir = state_dir / "exports"
        self.locate = locate
        self._wanted: dict[str, Export] = {}
        self._applied: dict[str, Export] = {}  # what the running ganesha serves
        self._process: GaneshaProcess | None = None
        self._lock = asyncio.Lock()
        self._supervisor: asyncio.Task[None] | None = None
        self._closing = False
        self.restarts = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)  # ganesha's D-Bus socket lives here: root only
        self.exports_dir.mkdir(exist_ok=True)
        for stale in self.exports_dir.glob("*.conf"):
            stale.unlink()
        (self.state_dir / "recovery").mkdir(exist_ok=True)
        async with self._lock:
            await self._launch()  # a failure here stops the server: NFS was asked for
        self._supervisor = asyncio.get_running_loop().create_task(self._supervise())

    async def close(self) -> None:
        self._closing = True
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(BaseException):
                await self._supervisor
        async with self._lock:
            if self._process is not None:
                await self._process.stop()
                self._process = None
            self._applied.clear()

    @property
    def ganesha_pid(self) -> int | None:
        return self._process.ganesha_pid if self._process else None

    async def _launch(self) -> None:
        process = GaneshaProcess(self.state_dir, self.settings.ganesha, self.settings.dbus_daemon)
        wanted = list(self._wanted.values())
        config = server_config(self.settings, self.state_dir / "recovery", wanted)
        await process.start(config, self.settings.port)
        self._process = process
        self._applied = {export.sandbox_id: export for export in wanted}

    async def _supervise(self) -> None:
        """Restart ganesha whenever it (or its D-Bus) dies; back off if it keeps dying."""
        failures = 0
        while not self._closing:
            process = self._process
            if process is not None:
                reason = await process.wait()
                if self._closing:
                    return
                log.error("nfs: %s; restarting it", reason)
                async with self._lock:
                    await process.stop()
                    self._process = None
                    self._applied.clear()
            await asyncio.sleep(RESTART_DELAYS[min(failures, len(RESTART_DELAYS) - 1)])
            async with self._lock:
                try:
                    await self._launch()
                except (RuntimeFailure, OSError) as exc:
                    failures += 1
                    log.error("nfs: could not restart nfs-ganesha: %s", exc)
                    continue
                await self._reconcile()
            failures = 0
            self.restarts += 1
            log.info("nfs: nfs-ganesha restarted with %d exports", len(self._applied))

    # ------------------------------------------------------------------ exports
    async def export(self, sandbox_id: str) -> None:
        if sandbox_id in self._wanted:
            return
        workspace = self.locate(sandbox_id)
        if workspace is None:
            log.warning("nfs: sandbox %s has no workspace on this host; not exported", sandbox_id)
            return
        used = {e.export_id for e in self._wanted.values()} | {e.export_id for e in self._applied.values()}
        export_id = next((i for i in range(1, MAX_EXPORT_ID + 1) if i not in used), None)
        if export_id is None:
            log.error("nfs: all %d export ids are in use; %s not exported", MAX_EXPORT_ID, sandbox_id)
            return
        self._wanted[sandbox_id] = Export(export_id, sandbox_id, workspace.path, workspace.uid, workspace.gid)
        async with self._lock:
            await self._reconcile()

    async def withdraw(self, sandbox_id: str) -> None:
        if self._wanted.pop(sandbox_id, None) is None and sandbox_id not in self._applied:
            return
        async with self._lock:
            await self._reconcile()

    def url(self, sandbox_id: str) -> str | None:
        export = self._wanted.get(sandbox_id)
        return self.settings.url(export.pseudo) if export is not None else None

    async def _reconcile(self) -> None:
        """Bring the running ganesha's exports to the wanted ones (caller holds the lock).
        While ganesha is down there is nothing to do: its restart starts from the wanted set."""
        process = self._process
        if process is None:
            return
        for sandbox_id, export in list(self._applied.items()):
            if self._wanted.get(sandbox_id) != export:
                try:
                    await process.remove_export(export.export_id)
                except RuntimeFailure as exc:
                    log.error("nfs: %s", exc)
                    continue
                del self._applied[sandbox_id]
        for sandbox_id, export in list(self._wanted.items()):
            if sandbox_id in self._applied:
                continue
            conf = self.exports_dir / f"{sandbox_id}.conf"
            conf.write_text(export_block(export, self.settings.clients))
            try:
                await process.add_export(conf, export.export_id)
            except ExportRejected as exc:  # it would fail again: not exported (nfs_url stays null)
                log.error("nfs: sandbox %s: %s", sandbox_id, exc)
                del self._wanted[sandbox_id]
                continue
            except RuntimeFailure as exc:  # ganesha died: its restart adds it
                log.error("nfs: sandbox %s: %s", sandbox_id, exc)
                continue
            finally:
                conf.unlink(missing_ok=True)
            self._applied[sandbox_id] = export
