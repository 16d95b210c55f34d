"""Garbage collection in the gateway process, which holds every open SSE stream.

An open stream is about 180 objects the cyclic collector tracks (uvicorn's protocol and
cycle, the ASGI and middleware coroutines, the task, its watch), so 10,000 streams are
~1.8 M. CPython's full collection walks all of them, and runs whenever what survived since
the last one reaches a quarter of what that one kept: while streams open, and every few
thousand opens after, a pause of 0.5-2.5 s on two cores in which no line reaches anyone
(docs/bench.md: the SSE figure's p99 was that pause).

After a full collection everything left is reachable, so `HeapKeeper` freezes it
(`gc.freeze`, as `libs.service` does once after setup): the next full collections walk only
what was made since and take milliseconds. A frozen object that later dies in a reference
cycle is reclaimed only by a pass over everything, which the keeper runs itself every
`full_every_s` (unfreeze, collect, freeze; logged with its pause and what it freed).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any

import structlog

log = structlog.get_logger("gateway")

FULL_EVERY_S = 600.0
OLDEST = 2  # the generation a full collection collects


class HeapKeeper:
    def __init__(self, full_every_s: float = FULL_EVERY_S) -> None:
        self.full_every_s = full_every_s
        self.full_passes = 0
        self._task: asyncio.Task[None] | None = None

    def _after_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and info["generation"] == OLDEST:
            gc.freeze()  # what a full collection left is live: keep it out of the next ones

    async def _full_passes(self) -> None:
        while True:
            await asyncio.sleep(self.full_every_s)
            started = time.perf_counter()
            gc.unfreeze()
            freed = gc.collect()
            gc.freeze()
            self.full_passes += 1
            log.info("gateway.gc_full_pass", pause_ms=round(1000 * (time.perf_counter() - started)), freed=freed,
                     frozen=gc.get_freeze_count())

    def start(self) -> None:
        if self._task is None:
            gc.callbacks.append(self._after_collection)
            self._task = asyncio.create_task(self._full_passes(), name="gc-full-passes")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._after_collection)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
