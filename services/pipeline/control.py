"""Which runs this pipeline process holds, so a cancel request reaches the one running it.

Every pipeline process listens to `mma.evt.*.cancel_requested` (core NATS, no queue
group); the process that runs the generation interrupts it, the others ignore it. A
cancel that arrives before any process picked the job up is found in the stream by
the run itself when it starts (`Run.execute`).
"""

from __future__ import annotations

from typing import Protocol

import structlog

from libs.schemas import BusMessage, CancelRequested

log = structlog.get_logger("pipeline")


class Cancellable(Protocol):
    def request_cancel(self, requested_by: str) -> None: ...


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
