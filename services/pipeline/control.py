"""Which runs this pipeline process holds, so a cancel request reaches the one running it.

Every pipeline process listens to `mma.evt.*.cancel_requested` (core NATS, no queue
group); the process that runs the generation interrupts it, the others ignore it. A
cancel that arrives before any process picked the job up is found in the stream by
the run itself when it starts (`Run.execute`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import structlog

from libs.schemas import BusMessage, CancelRequested

log = structlog.get_logger("pipeline")

T = TypeVar("T")

# a cancelled wait still running after this long swallowed the cancel: it is cancelled again
RECANCEL_S = 1.0


class Cancellable(Protocol):
    def request_cancel(self, requested_by: str) -> None: ...


class CancelSwitch:
    """One run's cancel request: who asked, and the wait it interrupts.

    A request interrupts only what the run awaits through `interruptible` (a customer slot,
    a step's provider call), never a checkpoint or a publish: those always complete, and the
    run also checks `requested_by` between steps.

    A cancellation can be swallowed below us: Python 3.11's `asyncio.wait_for` returns the inner
    result when the cancel lands just as the inner call finished, and a provider poll loop then
    goes on until the prediction ends (a minute for a video). So the interrupted wait is
    cancelled again every `recancel_s` until it stops, with a warning naming the run's wait.
    """

    def __init__(self, recancel_s: float = RECANCEL_S) -> None:
        self.requested_by: str | None = None
        self.recancel_s = recancel_s
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
        self._interrupt = lambda: self._cancel_until_done(task)
        try:
            return await task
        finally:
            self._interrupt = None

    def _cancel_until_done(self, task: asyncio.Future[T], attempt: int = 0) -> None:
        if task.done():
            return
        if attempt:
            log.warning("pipeline.cancel_swallowed", attempt=attempt, waiting_on=_named(task))
        task.cancel()
        asyncio.get_running_loop().call_later(self.recancel_s, self._cancel_until_done, task, attempt + 1)

    def interrupted(self) -> bool:
        """A CancelledError came from a cancel request, not from this process shutting down."""
        current = asyncio.current_task()
        return self.requested_by is not None and (current is None or current.cancelling() == 0)


def _named(task: asyncio.Future[Any]) -> str:
    """Where the wait stands (the innermost coroutine's name), for the warning."""
    coro = task.get_coro() if isinstance(task, asyncio.Task) else None
    name = "?"
    while coro is not None:
        name = getattr(coro, "__qualname__", name)
        coro = getattr(coro, "cr_await", None)
    return str(name)


class StartGate:
    """At most `limit` runs in their start at once (pickup reads, customer slot, first checkpoint).

    A burst of jobs (thousands fetched in a second) otherwise starts them all together: their
    start-up reads and writes are all in flight at once, and the memory they hold at that moment
    stays with the process. Through the gate they start a few hundred at a time, in the order
    fetched, and wait cheaply meanwhile. A run leaves the gate when it starts its first step or
    must wait in line for its customer's slot (or ends first); `limit` 0 = no gate.
    """

    def __init__(self, limit: int) -> None:
        self.slots = asyncio.Semaphore(limit) if limit > 0 else None

    async def enter(self) -> Callable[[], None]:
        """Wait for a place; the result leaves it (idempotent)."""
        slots = self.slots
        if slots is None:
            return _nothing
        await slots.acquire()
        left = False

        def leave() -> None:
            nonlocal left
            if not left:
                left = True
                slots.release()

        return leave


def _nothing() -> None:
    return None


class RunRegistry:
    def __init__(self) -> None:
        self.runs: dict[str, Cancellable] = {}

    def add(self, generation_id: str, run: Cancellable) -> None:
        self.runs[generation_id] = run

    def remove(self, generation_id: str, run: Cancellable) -> None:
        if self.runs.get(generation_id) is run:
            del self.runs[generation_id]

    def on_cancel_requested(self, msg: BusMessage) -> None:
        if not isinstance(msg, CancelRequested):
            return
        run = self.runs.get(msg.generation_id)
        if run is None:
            return
        log.info("pipeline.cancel_received", generation_id=msg.generation_id, requested_by=msg.requested_by)
        run.request_cancel(msg.requested_by)
