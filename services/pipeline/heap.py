"""Garbage collection in the pipeline process, which holds every run in flight.

A run in flight is a few hundred objects the cyclic collector tracks (its state and vars, the
step's context, tasks, coroutines and their frames), and it lives as long as its prediction
(60 s and more). CPython's collector walked them again and again: collecting the youngest
generation every 700 allocations, promoting survivors, and walking everything in a full pass each
time the heap grew by a quarter. In a 3,000-run capacity round (20 s predictions) that was 12-15 s
of the process's CPU, about half of it (1,800 young, 160 middle and 15 full passes, the longest
1 s), for about one object of cyclic garbage per run.

So `HeapKeeper` collects the youngest generation every `YOUNG` allocations (most of what a step
allocates is freed by its reference count before then) and freezes what survives each collection
(`gc.freeze`): a run's objects are walked once, not in every later pass. The same round: 1.0 s of
collections, the longest 50 ms. A frozen object that later dies in a reference cycle (rare: a
task's exception and its traceback) is reclaimed only by a pass over everything, which the keeper
runs every `full_every_s` (unfreeze, collect, freeze; logged with its pause and what it freed).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any

import structlog

log = structlog.get_logger("pipeline")

YOUNG = 10_000  # allocations between two collections of the youngest generation (CPython's default: 700)
FULL_EVERY_S = 600.0


class HeapKeeper:
    def __init__(self, full_every_s: float = FULL_EVERY_S, young: int = YOUNG) -> None:
        self.full_every_s = full_every_s
        self.young = young
        self.full_passes = 0
        self._thresholds: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    @staticmethod
    def _after_collection(phase: str, info: dict[str, Any]) -> None:
        if phase == "stop":
            gc.freeze()  # what survived is live (runs in flight): keep it out of the next collections

    async def _full_passes(self) -> None:
        while True:
            await asyncio.sleep(self.full_every_s)
            self.full_pass()

    def full_pass(self) -> int:
        """Collect everything, the frozen objects included; what is left is frozen again."""
        started = time.perf_counter()
        gc.unfreeze()
        freed = gc.collect()
        gc.freeze()
        self.full_passes += 1
        log.info("pipeline.gc_full_pass", pause_ms=round(1000 * (time.perf_counter() - started)), freed=freed,
                 frozen=gc.get_freeze_count())
        return freed

    def start(self) -> None:
        if self._task is None:
            self._thresholds = gc.get_threshold()
            _, middle, old = self._thresholds
            gc.set_threshold(self.young, middle, old)
            gc.callbacks.append(self._after_collection)
            self._task = asyncio.create_task(self._full_passes(), name="gc-full-passes")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._after_collection)
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
