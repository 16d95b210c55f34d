"""Bounded retries of transient provider errors (5xx, timeouts, connection), with backoff.

4xx and schema errors are never retried. The attempt count is returned (and attached to
the final error as `retry`), so every step records how many tries it took.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import stamina

from libs.errors import ProviderError

T = TypeVar("T")


def is_transient(exc: Exception) -> bool:
    return isinstance(exc, ProviderError) and exc.is_retryable


async def with_retries(call: Callable[[], Awaitable[T]], attempts: int, wait_initial_s: float = 0.2) -> tuple[T, int]:
    """(result, attempts used); the last ProviderError carries `retry={attempt, max}`."""
    used = 0
    try:
        async for attempt in stamina.retry_context(
            on=is_transient, attempts=max(1, attempts), wait_initial=wait_initial_s, wait_max=2.0, timeout=None
        ):
            with attempt:
                used = attempt.num
                return await call(), used
    except ProviderError as exc:
        exc.details["retry"] = {"attempt": used, "max": max(1, attempts)}
        raise
    raise AssertionError("unreachable: stamina yields at least one attempt")
