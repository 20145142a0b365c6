"""What counts as activity for a sandbox's idle timeout.

API calls that reach the sandbox (commands, files, PTYs, the process list), PTY traffic
both ways, and clients following a process's output (a `run` in flight, an open stream)
are recorded here by the services. The CPU use of the sandbox's own processes is sampled
by the lifecycle service (a busy background build is not idle even if no client talks to
the sandbox). A GET of the sandbox's record is not activity: a dashboard that polls must
not keep every sandbox alive.
"""

from __future__ import annotations

import time
from collections import Counter


class Activity:
    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._followers: Counter[str] = Counter()

    def touch(self, sandbox_id: str) -> None:
        self._last[sandbox_id] = time.monotonic()

    def follow(self, sandbox_id: str) -> None:
        """A client follows a process of the sandbox: it is active until unfollow."""
        self.touch(sandbox_id)
        self._followers[sandbox_id] += 1

    def unfollow(self, sandbox_id: str) -> None:
        self._followers[sandbox_id] -= 1
        if self._followers[sandbox_id] <= 0:
            del self._followers[sandbox_id]
        self.touch(sandbox_id)

    def idle_seconds(self, sandbox_id: str) -> float:
        if self._followers.get(sandbox_id):
            return 0.0
        last = self._last.get(sandbox_id)
        if last is None:
            self._last[sandbox_id] = last = time.monotonic()
        return time.monotonic() - last

    def forget(self, sandbox_id: str) -> None:
        self._last.pop(sandbox_id, None)
        self._followers.pop(sandbox_id, None)
