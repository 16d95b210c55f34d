"""A bounded, time-limited set of pass ids (memory stays flat; an entry is forgotten after its TTL)."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class RecentPasses:
    """Pass ids whose welcome was decided lately: at most `capacity`, each for `ttl_s`."""

    def __init__(self, capacity: int = 10_000, ttl_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()

    def __contains__(self, pass_id: object) -> bool:
        if not isinstance(pass_id, str):
            return False
        at = self._seen.get(pass_id)
        if at is None:
            return False
        if self._clock() - at >= self.ttl_s:
            del self._seen[pass_id]
            return False
        return True

    def add(self, pass_id: str) -> None:
        self._seen[pass_id] = self._clock()
        self._seen.move_to_end(pass_id)
        while len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
