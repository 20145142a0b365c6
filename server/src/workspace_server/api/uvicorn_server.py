"""uvicorn's server, except that a forced quit still shuts the application down.

A second Ctrl-C while stopping ("press CTRL+C again to force quit") makes uvicorn skip
both the wait for open connections and the application's shutdown. The latter drops the
warm pool: skipped, its sandboxes kept running with their mounts, cgroups and loop devices
until a next server started on the data dir. `make run` gets there with one Ctrl-C too (the
terminal's SIGINT and the script's SIGTERM both reach the server). A forced quit here skips
only the wait for connections."""

from __future__ import annotations

import socket
from typing import Any

import uvicorn


class WorkspaceServer(uvicorn.Server):
    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        # Forced before uvicorn reached the application's shutdown, it skipped it; forced
        # during it (a signal while the pool is dropped), it ran it: not twice.
        if self.force_exit and not self._app_shut_down():
            await self.lifespan.shutdown()

    def _app_shut_down(self) -> bool:
        finished = getattr(self.lifespan, "shutdown_event", None)  # LifespanOn's
        return finished is not None and finished.is_set()


def serve(app: Any, **config: Any) -> bool:
    """Run `app` until a signal stops it; False if it never started (the port was taken...)."""
    server = WorkspaceServer(uvicorn.Config(app, **config))
    server.run()
    return server.started
