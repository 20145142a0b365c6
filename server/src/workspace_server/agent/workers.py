"""Reusable threads for the agent's operations and output pumps."""

from __future__ import annotations

import queue
import threading

from .errors import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Tuple


class Workers:
    """Reusable threads for operations and output pumps.

    Starting a Python thread is a round trip between threads (start() waits until the new
    one runs), twice per command; waking an idle worker is half of that. Workers idle
    beyond IDLE_MAX exit, so a burst leaves no crowd behind."""

    IDLE_MAX = 4  # each counts against the sandbox's pids limit

    def __init__(self) -> None:
        self._tasks: "queue.SimpleQueue[Tuple[Callable[..., None], Tuple[Any, ...]]]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, function: "Callable[..., None]", *args: Any) -> None:
        """Run function(*args) on a worker; RuntimeError if no thread can be had (pids limit)."""
        with self._lock:
            if self._idle:
                self._idle -= 1  # exactly one idle worker is, or will be, waiting on get()
                self._tasks.put((function, args))
                return
        threading.Thread(target=self._work, args=(function, args), daemon=True).start()

    def _work(self, function: "Callable[..., None]", args: Tuple[Any, ...]) -> None:
        while True:
            try:
                function(*args)
            except Exception as exc:  # a worker outlives any one task
                log("worker task failed: %r" % (exc,))
            with self._lock:
                if self._idle >= self.IDLE_MAX:
                    return
                self._idle += 1
            function, args = self._tasks.get()
