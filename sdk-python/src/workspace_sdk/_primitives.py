"""Hand-written async/sync twins for the few spots where the two differ by more than keywords.

Everything in ``_async/`` is rewritten into ``_sync/`` by ``scripts/unasync.py``, which maps
``AsyncName`` to ``Name`` and ``async_name`` to ``name``. So every async primitive here has a
sync twin under the rewritten name, with the same behaviour:

* background work: an asyncio task / a daemon thread (the PTY reader);
* sleeping: ``asyncio.sleep`` / ``time.sleep``;
* receiving one WebSocket message with a deadline;
* turning user-supplied upload content into a stream of byte chunks.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine, Iterator
from typing import IO, Any, cast

from websockets.asyncio.client import ClientConnection as AsyncClientConnection
from websockets.sync.client import ClientConnection

from .types import AsyncFileContent, FileContent

__all__ = [
    "AsyncBackgroundTask",
    "BackgroundTask",
    "async_receive_message",
    "async_sleep",
    "async_upload_chunks",
    "receive_message",
    "sleep",
    "upload_chunks",
]


class AsyncBackgroundTask:
    """Runs a coroutine function as an asyncio task on the current event loop."""

    def __init__(self, target: Callable[[], Coroutine[Any, Any, None]], name: str) -> None:
        self._target = target
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._target(), name=self._name)

    async def join(self, timeout: float | None = None) -> bool:
        """Wait for the task to finish (without cancelling it); ``False`` on timeout."""
        task = self._task
        if task is None or task.done():
            return True
        if task is asyncio.current_task():
            return False  # joining oneself would deadlock
        done, _ = await asyncio.wait({task}, timeout=timeout)
        return bool(done)


class BackgroundTask:
    """Runs a function on a daemon thread (daemon: a forgotten PTY never blocks exit)."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        self._target = target
        self._name = name
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._target, name=self._name, daemon=True)
        self._thread.start()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to finish; ``False`` on timeout."""
        thread = self._thread
        if thread is None:
            return True
        if thread is threading.current_thread():
            return False  # e.g. close() called from an on_data callback
        thread.join(timeout)
        return not thread.is_alive()


async def async_sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


async def async_receive_message(connection: AsyncClientConnection, timeout: float) -> str | bytes:
    """Receive one message; builtin ``TimeoutError`` if none arrives in time."""
    try:
        return await asyncio.wait_for(connection.recv(), timeout)
    except asyncio.TimeoutError as exc:  # distinct from builtins.TimeoutError before 3.11
        raise builtins.TimeoutError(f"no message within {timeout} s") from exc


def receive_message(connection: ClientConnection, timeout: float) -> str | bytes:
    """Receive one message; builtin ``TimeoutError`` if none arrives in time."""
    return connection.recv(timeout=timeout)


def async_upload_chunks(content: AsyncFileContent, chunk_size: int) -> AsyncIterator[bytes]:
    """Stream ``content`` (file object, sync or async iterable of bytes) chunk by chunk."""

    async def chunks() -> AsyncIterator[bytes]:
        if isinstance(content, AsyncIterable):
            async for chunk in content:
                yield bytes(chunk)
        elif hasattr(content, "read"):
            # Reading a local file blocks briefly; that is the same trade-off httpx makes
            # and keeps the SDK free of a thread pool or an async file library.
            file = cast(IO[bytes], content)
            while chunk := file.read(chunk_size):
                yield chunk
        else:
            for chunk in cast(Iterator[bytes], content):
                yield bytes(chunk)

    return chunks()


def upload_chunks(content: FileContent, chunk_size: int) -> Iterator[bytes]:
    """Stream ``content`` (file object or iterable of bytes) chunk by chunk."""
    if hasattr(content, "read"):
        file = cast(IO[bytes], content)
        while chunk := file.read(chunk_size):
            yield chunk
    else:
        for chunk in cast(Iterator[bytes], content):
            yield bytes(chunk)
