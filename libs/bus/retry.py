"""Retries of bus calls through stamina, entered only once a first plain try has failed.

Setting up a stamina retry context costs about 50 µs (tenacity underneath), more than a publish or a
request that succeeds at once; those are the bus's hot path, so the first try is a plain await and
only a failure pays for the context. Stamina then counts that try as its first attempt: it decides
with `on` whether to go on and waits `wait_s` (doubling up to `wait_max_s` when given, no jitter)
before the second.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import stamina

T = TypeVar("T")

# Whether a failure is worth another try; asked once per failure, so it may log.
Retryable = Callable[[Exception], bool]


async def retried(call: Callable[[], Awaitable[T]], *, on: Retryable, timeout_s: float | None, wait_s: float,
                  wait_max_s: float | None = None) -> T:
    """`await call()`, tried again while it fails with what `on` accepts and `timeout_s` (counted from
    the first try; None: no bound) is not used up. Then the last failure is raised as it is."""
    started = time.monotonic()
    try:
        return await call()
    except Exception as exc:
        first = exc
    remaining = None if timeout_s is None else timeout_s - (time.monotonic() - started)
    if remaining is not None and remaining <= 0:
        raise first
    async for attempt in stamina.retry_context(
        on=on, attempts=None, timeout=remaining, wait_initial=wait_s, wait_max=wait_max_s or wait_s,
        wait_jitter=0.0, wait_exp_base=1.0 if wait_max_s is None else 2.0,
    ):
        with attempt:
            if attempt.num == 1:
                raise first  # the plain try above, so stamina's rules and waits apply from its failure
            return await call()
    raise AssertionError("unreachable: stamina yields at least one attempt")
