"""The cyclic garbage collector in a process that holds many long-lived objects.

The gateway holds every open SSE stream (about 180 tracked objects each: uvicorn's protocol
and cycle, the ASGI coroutines, the task, its watch; 10,000 streams are ~1.8 M) and the
pipeline every run in flight (a few hundred each: state, vars, the step's context, tasks and
their frames, for as long as a 60 s prediction). CPython's collector walks them again and
again: a full collection whenever the heap grew by a quarter (in the gateway a 0.5-2.5 s
pause on two cores, the SSE figure's old p99), and in the pipeline young collections every
700 allocations (about half its CPU in a 3,000-run capacity round, for about one object of
cyclic garbage per run).

`HeapKeeper` freezes what survives a collection (`gc.freeze`: it is reachable, so the next
collections skip it): after every full collection (`freeze_after=FULL`, the gateway), or
after every collection with the youngest generation collected every `young` allocations
(`freeze_after=ANY`, the pipeline: a run's objects are walked once). A frozen object that later dies in a
reference cycle (rare: a task's exception and its traceback) is reclaimed only by a pass over
everything, which the keeper runs itself every `full_every_s` (unfreeze, collect, freeze;
logged as `<service>.gc_full_pass` with its pause and what it freed). It changes the whole
process: started by a service's `setup`, never by a service served inside a test's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from typing import Any, Literal

import structlog

log = structlog.get_logger("heap")

FULL_EVERY_S = 600.0
YOUNG = 10_000  # a young collection every this many allocations where freezing after any (CPython: 700)
OLDEST = 2  # the generation a full collection collects
FULL: Literal["full"] = "full"
ANY: Literal["any"] = "any"


class HeapKeeper:
    def __init__(self, service: str, freeze_after: Literal["full", "any"] = FULL,
                 full_every_s: float = FULL_EVERY_S, young: int | None = None) -> None:
        self.service = service
        self.freeze_after = freeze_after
        self.full_every_s = full_every_s
        self.young = young  # allocations between collections of the youngest generation (None: CPython's 700)
        self.full_passes = 0
        self._thresholds: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    def _after_collection(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "stop" and (self.freeze_after == ANY or info["generation"] == OLDEST):
            gc.freeze()  # what survived is reachable: keep it out of the next collections

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
        log.info(f"{self.service}.gc_full_pass", pause_ms=round(1000 * (time.perf_counter() - started)),
                 freed=freed, frozen=gc.get_freeze_count())
        return freed

    def start(self) -> None:
        if self._task is not None:
            return
        if self.young is not None:
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
            self._thresholds = None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
