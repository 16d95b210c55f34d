"""A background task that outlives its own bugs: restarted after an unexpected error, logged, counted.

A bare `asyncio.create_task` that raises dies silently (its exception is only seen when the
task is collected). `supervised` runs the task's function again after any exception but a
cancel, logs `service.task_crashed` with the error and counts `mina_task_restarts_total`,
so a surprise in one tick (a malformed reply, a bug) costs one tick, not the process's sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from libs.metrics import TASK_RESTARTS

log = structlog.get_logger("service")

RESTART_DELAY_S = 1.0


async def supervise(name: str, run: Callable[[], Awaitable[None]], restart_delay_s: float = RESTART_DELAY_S) -> None:
    """Run `run()` until it returns or the task is cancelled, starting it again after each crash."""
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the edge of a background task: log, count, start again
            log.exception("service.task_crashed", task=name, error=repr(exc))
            TASK_RESTARTS.labels(task=name).inc()
        await asyncio.sleep(restart_delay_s)


def supervised(name: str, run: Callable[[], Awaitable[None]],
               restart_delay_s: float = RESTART_DELAY_S) -> asyncio.Task[None]:
    """`supervise` as a named task."""
    return asyncio.create_task(supervise(name, run, restart_delay_s), name=name)


async def stop(task: asyncio.Task[None]) -> None:
    """Cancel a supervised task and wait for it to end."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
