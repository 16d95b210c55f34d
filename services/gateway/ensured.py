"""Pass ids whose customer row this gateway process ensured recently.

`EnsureWelcome` is a round trip gateway -> billing -> ledger on every create
(docs/bench.md, fix 3); once a pass id is ensured, repeating it within minutes changes
nothing (billing grants the welcome credits once and still refuses a create without
credit), so it is skipped. Bounded and time-limited: memory stays flat, and a customer
row removed out of band is ensured again after the TTL.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class EnsuredPasses:
    """An LRU of pass id -> when it was ensured, at most `capacity` entries younger than `ttl_s`."""

    def __init__(self, capacity: int = 10_000, ttl_s: float = 300.0,
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

    def __len__(self) -> int:
        return len(self._seen)
