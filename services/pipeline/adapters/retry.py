"""Bounded retries of transient provider errors (5xx, timeouts, connection), with backoff.

4xx and schema errors are never retried. The attempt count is returned (and attached to
the final error as `retry`), so every step records how many tries it took. Every failed
attempt, retried or not, counts once in `mina_provider_errors_total{provider,code}`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import stamina

from libs.errors import ProviderError
from libs.metrics import PROVIDER_ERRORS

T = TypeVar("T")
COUNTED = "_mina_provider_error_counted"


def count_provider_error(provider: str, exc: ProviderError) -> None:
    """Count one failed provider call, once per exception object (the runner's fallback skips it)."""
    if getattr(exc, COUNTED, False):
        return
    PROVIDER_ERRORS.labels(provider=provider or "unknown", code=exc.instance_code).inc()
    setattr(exc, COUNTED, True)


def is_transient(exc: Exception) -> bool:
    return isinstance(exc, ProviderError) and exc.is_retryable


async def with_retries(call: Callable[[], Awaitable[T]], attempts: int, wait_initial_s: float = 0.2, *,
                       provider: str) -> tuple[T, int]:
    """(result, attempts used); the last ProviderError carries `retry={attempt, max}`.

    The first try is a plain await: a stamina context costs about 50 us to set up, more than most
    calls that succeed at once, so only a transient failure pays for it (and stamina then counts that
    failure as its first attempt, with its waits and bound from there)."""
    most = max(1, attempts)
    try:
        return await _counted(call, provider), 1
    except ProviderError as exc:
        if not is_transient(exc) or most == 1:
            exc.details["retry"] = {"attempt": 1, "max": most}
            raise
        first = exc
    used = 1

    try:
        async for attempt in stamina.retry_context(
            on=is_transient, attempts=most, wait_initial=wait_initial_s, wait_max=2.0, timeout=None
        ):
            with attempt:
                used = attempt.num
                if used == 1:
                    raise first  # the plain try above
                return await _counted(call, provider), used
    except ProviderError as exc:
        exc.details["retry"] = {"attempt": used, "max": most}
        raise
    raise AssertionError("unreachable: stamina yields at least one attempt")


async def _counted(call: Callable[[], Awaitable[T]], provider: str) -> T:
    try:
        return await call()
    except ProviderError as exc:
        count_provider_error(provider, exc)
        raise
