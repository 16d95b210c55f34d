"""Which runs this pipeline process holds, so a cancel request reaches the one running it.

Every pipeline process listens to `mma.evt.*.cancel_requested` (core NATS, no queue
group); the process that runs the generation interrupts it, the others ignore it. A
cancel that arrives before any process picked the job up is found in the stream by
the run itself when it starts (`Run.execute`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import structlog

from libs.schemas import BusMessage, CancelRequested

log = structlog.get_logger("pipeline")

T = TypeVar("T")


class Cancellable(Protocol):
    def request_cancel(self, requested_by: str) -> None: ...


class CancelSwitch:
    """One run's cancel request: who asked, and the wait it interrupts.

    A request interrupts only what the run awaits through `interruptible` (a customer slot,
    a step's provider call), never a checkpoint or a publish: those always complete, and the
    run also checks `requested_by` between steps.
    """

    def __init__(self) -> None:
        self.requested_by: str | None = None
        self._interrupt: Callable[[], object] | None = None

    def request(self, requested_by: str) -> None:
        """The first request counts; later ones change nothing."""
        if self.requested_by is not None:
            return
        self.requested_by = requested_by
        if self._interrupt is not None:
            self._interrupt()

    async def interruptible(self, awaitable: Awaitable[T]) -> T:
        """Await `awaitable` so that a cancel request interrupts it (CancelledError here)."""
        task: asyncio.Future[T] = asyncio.ensure_future(awaitable)
        self._interrupt = task.cancel
        try:
            return await task
        finally:
            self._interrupt = None

    def interrupted(self) -> bool:
        """A CancelledError came from a cancel request, not from this process shutting down."""
        current = asyncio.current_task()
        return self.requested_by is not None and (current is None or current.cancelling() == 0)


class RunRegistry:
    def __init__(self) -> None:
        self.runs: dict[str, Cancellable] = {}

    def add(self, generation_id: str, run: Cancellable) -> None:
        self.runs[generation_id] = run

    def remove(self, generation_id: str, run: Cancellable) -> None:
        if self.runs.get(generation_id) is run:
            del self.runs[generation_id]

    async def on_cancel_requested(self, msg: BusMessage) -> None:
        if not isinstance(msg, CancelRequested):
            return
        run = self.runs.get(msg.generation_id)
        if run is None:
            return
        log.info("pipeline.cancel_received", generation_id=msg.generation_id, requested_by=msg.requested_by)
        run.request_cancel(msg.requested_by)
