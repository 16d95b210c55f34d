"""Creates per pass id per minute, in memory: a sliding window per process.

Each gateway replica limits on its own; that bounds a runaway client without a
shared store on the request path. `limit_per_minute=0` turns it off.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

from libs.errors import RateLimitedError

WINDOW_S = 60.0


class RateLimiter:
    def __init__(self, limit_per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit_per_minute
        self._clock = clock
        self._hits: dict[str, deque[float]] = {}

    def check(self, key: str) -> None:
        """Count one hit for `key`; RateLimitedError (with `retry_after`) once over the limit."""
        if self.limit <= 0:
            return
        now = self._clock()
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - WINDOW_S:
            hits.popleft()
        if len(hits) >= self.limit:
            retry_after = max(1, math.ceil(hits[0] + WINDOW_S - now))
            raise RateLimitedError("Too many requests, please slow down.", retry_after=retry_after)
        hits.append(now)
        if len(self._hits) > 100_000:
            self._evict(now)

    def _evict(self, now: float) -> None:
        for key in [k for k, v in self._hits.items() if not v or v[-1] <= now - WINDOW_S]:
            del self._hits[key]
