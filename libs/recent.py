"""Keys (pass ids) a process has handled lately: bounded and time-limited, so memory stays flat.

The gateway keeps the pass ids it ensured (`EnsureWelcome` is a round trip gateway -> billing ->
ledger; repeating it within minutes changes nothing, docs/bench.md fix 3); billing keeps those
whose welcome it decided (services/billing/welcome.py). A key is forgotten after its TTL, so a
customer row removed out of band is ensured again.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RecentKeys:
    """An LRU of key -> when it was added, at most `capacity` entries younger than `ttl_s`."""

    def __init__(self, capacity: int = 10_000, ttl_s: float = 300.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        at = self._seen.get(key)
        if at is None:
            return False
        if self._clock() - at >= self.ttl_s:
            del self._seen[key]
            return False
        return True

    def add(self, key: str) -> None:
        self._seen[key] = self._clock()
        self._seen.move_to_end(key)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)

    def __len__(self) -> int:
        return len(self._seen)
