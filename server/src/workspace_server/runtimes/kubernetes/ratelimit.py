"""Client-side rate limiting of API calls, and the server's own `429 Retry-After`.

A token bucket like client-go's (qps, burst): a burst of creates goes out at once, a
sustained flood is spread at `qps`. When the API server still answers 429 (API Priority
and Fairness rejected the request), its Retry-After says when to come back."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping

MAX_RETRY_AFTER = 60.0
DEFAULT_RETRY_AFTER = 1.0


class TokenBucket:
    def __init__(self, qps: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.qps = qps
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._stamp = clock()
        self._lock = asyncio.Lock()
        self.waited = 0.0  # total seconds callers were held back (a metric for tests and logs)

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._stamp) * self.qps)
        self._stamp = now

    async def acquire(self) -> None:
        async with self._lock:  # first come, first served
            self._refill()
            if self._tokens < 1.0:
                wait = (1.0 - self._tokens) / self.qps
                self.waited += wait
                await asyncio.sleep(wait)
                self._refill()
            self._tokens -= 1.0


def retry_after_seconds(headers: Mapping[str, str] | None) -> float:
    """Seconds to wait from a Retry-After header (delta-seconds; HTTP dates are not used by
    the API server), bounded so a bad header cannot stall the server."""
    value = None
    for key, candidate in (headers or {}).items():
        if key.lower() == "retry-after":
            value = candidate
    try:
        seconds = float(value) if value is not None else DEFAULT_RETRY_AFTER
    except ValueError:
        seconds = DEFAULT_RETRY_AFTER
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)
