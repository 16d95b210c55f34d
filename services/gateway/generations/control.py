"""Control of a running generation from HTTP: who may cancel it, and where it is in the queue.

Cancel: the gateway checks ownership and state, publishes `CancelRequested` (the
pipeline running the generation stops it; a job still queued stops itself when it is
picked up), then follows the generation's events for `cancel_wait_s` so a quick stop
answers `cancelled` and a slow one `cancelling` (SSE tells the end).

Queue position of a queued generation: the JOBS stream sequence of its job minus the
last sequence the `pipeline` consumer delivered (or, before any delivery, the first
sequence still in the stream). The estimate is that position times the mean
accepted-to-done time of the last `queue_estimate_window` finished generations.
"""

from __future__ import annotations

import nats.js.errors

from libs.bus import Bus
from libs.bus.direct import last_of
from libs.errors import ConflictError, NotFoundError
from libs.final import final_event, last_event
from libs.schemas import (
    DurationStats,
    GenerationAccepted,
    GenerationView,
    GetGeneration,
    RecentDurations,
    Stream,
)
from services.gateway.generations.views import TERMINAL

PIPELINE_DURABLE = "pipeline"


async def owner_and_state(bus: Bus, generation_id: str) -> tuple[str, str]:
    """(pass id, state) from the ledger, or from the stream while the row is not projected yet."""
    try:
        view = await bus.request(GetGeneration(generation_id=generation_id), GenerationView)
        owner, state = view.pass_id, view.status
    except NotFoundError:
        accepted = await last_event(bus, f"mma.evt.{generation_id}.accepted")
        if not isinstance(accepted, GenerationAccepted):
            raise
        owner, state = accepted.pass_id, "queued"
    if state not in TERMINAL:
        ended = await final_event(bus, generation_id)
        if ended is not None:
            state = ended.status.value
    return owner, state


def already_finished(generation_id: str, state: str) -> ConflictError:
    return ConflictError(f"This generation already finished ({state}); there is nothing to cancel.",
                         code="ALREADY_FINISHED", generation_id=generation_id, state=state)


async def queue_info(bus: Bus, generation_id: str, estimate_window: int) -> dict[str, int | float | None] | None:
    """`{position, estimate_s}` while the job waits undelivered in JOBS; None otherwise. The job by direct get,
    then the pipeline's consumer; the stream's first sequence only for a job still waiting."""
    job = (await last_of(bus.js, Stream.JOBS.value, [f"mma.job.{generation_id}"]))[0]
    if job is None:
        return None
    delivered = 0
    try:
        consumer = await bus.js.consumer_info(Stream.JOBS.value, PIPELINE_DURABLE)
        delivered = int(consumer.delivered.stream_seq or 0)
    except nats.js.errors.NotFoundError:
        pass  # no pipeline ever started: everything still in the stream is waiting
    if job.seq <= delivered:  # picked up already (its run has not acked it yet): the common case
        return None
    stream = await bus.js.stream_info(Stream.JOBS.value)
    position = job.seq - max(int(stream.state.first_seq or 1) - 1, delivered)
    if position <= 0:
        return None
    stats = await bus.request(RecentDurations(limit=estimate_window), DurationStats)
    estimate = round(position * stats.mean_s, 1) if stats.mean_s is not None else None
    return {"position": position, "estimate_s": estimate}
