"""The services' background tasks: each with its own log context, all cancelled at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Coroutine
from typing import Any

from workspace_server.logs import sandbox_id_var


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, None], sandbox_id: str = "-") -> None:
        """Run `coroutine` as a task whose log lines carry `sandbox_id`, never the id of the
        request that triggered it."""
        context = contextvars.Context()
        context.run(sandbox_id_var.set, sandbox_id)
        task = asyncio.get_running_loop().create_task(coroutine, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
