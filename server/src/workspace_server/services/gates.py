"""One gate per sandbox: lifecycle operations (pause, resume, stop, start, fork, delete)
pass one at a time, and never while a command is being started; command starts pass
together, but not during an operation.

So racing operations from several clients are serialised (each sees the state the one
before left), and a pause never misses a process that was being started as it froze the
others. Only the start of a command holds the gate (until its pid is known), never its run.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class Gate:
    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._starting = 0
        self._no_starts = asyncio.Event()
        self._no_starts.set()

    @asynccontextmanager
    async def operation(self) -> AsyncIterator[None]:
        async with self._lock:
            await self._no_starts.wait()
            yield

    @asynccontextmanager
    async def command_start(self) -> AsyncIterator[None]:
        async with self._lock:  # waits behind an operation in progress
            self._starting += 1
            self._no_starts.clear()
        try:
            yield
        finally:
            self._starting -= 1
            if self._starting == 0:
                self._no_starts.set()

    @property
    def busy(self) -> bool:
        return self._lock.locked() or self._starting > 0


class Gates:
    def __init__(self) -> None:
        self._gates: dict[str, Gate] = {}

    def __call__(self, sandbox_id: str) -> Gate:
        gate = self._gates.get(sandbox_id)
        if gate is None:
            gate = self._gates[sandbox_id] = Gate()
        return gate

    def forget(self, sandbox_id: str) -> None:
        gate = self._gates.get(sandbox_id)
        if gate is not None and not gate.busy:
            del self._gates[sandbox_id]
