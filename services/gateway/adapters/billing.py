"""Billing as the gateway sees it: its price list, asked over the bus and kept for a minute.

Billing owns prices (its settings); the gateway only shows them (`/credits/balance` meta,
the `costs` of a 402, a legacy answer's cost). Prices change with a billing restart, so a
copy a minute old is good enough and saves a round trip on every one of those answers. When
billing does not answer, the last copy is used; with none yet, the error goes to the caller
(a 503, like any dependency restarting).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from libs.bus import Bus
from libs.errors import MmaError
from libs.schemas import PriceList, Prices

log = structlog.get_logger("gateway")

PRICES_TTL_S = 60.0
ASK_TIMEOUT_S = 3.0
RETRY_S = 5.0  # after billing did not answer, the stale copy serves this long before asking again


class PriceBook:
    def __init__(self, bus: Bus, ttl_s: float = PRICES_TTL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._bus = bus
        self._ttl_s = ttl_s
        self._clock = clock
        self._prices: Prices | None = None
        self._fresh_until = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self) -> Prices:
        """Billing's prices: the cached copy while fresh, else asked once (concurrent callers share the ask)."""
        if self._prices is not None and self._clock() < self._fresh_until:
            return self._prices
        async with self._lock:
            if self._prices is not None and self._clock() < self._fresh_until:
                return self._prices
            try:
                self._prices = await self._bus.request(PriceList(), Prices, timeout=ASK_TIMEOUT_S)
            except MmaError as exc:
                if self._prices is None:
                    raise
                log.warning("gateway.prices_stale", error=exc.message)
                self._fresh_until = self._clock() + RETRY_S
                return self._prices
            self._fresh_until = self._clock() + self._ttl_s
            return self._prices
