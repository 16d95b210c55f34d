"""What a run reads when its job is picked up: its checkpoint, a cancel request already in the stream, and
its customer's slots, in one batch (`libs.bus.direct.last_in`).

They were three round trips one after the other (the checkpoint, the cancel request, then the
waiting list and the slots). On a replicated stream the cancel request is read through the JetStream API (the
stream's leader answers: a direct get may be answered by a replica that is behind, and a cancel
missed there would run and charge the generation); on one replica, and for the others, direct gets. The slots are read
whether or not the run will take one (a resumed or cancelled run reads a few bytes for nothing), and
a slot seen free is still taken by compare-and-set on the revision read, so reading it early changes
no outcome.
"""

from __future__ import annotations

from typing import NamedTuple

from libs.bus.direct import Read, Stored, last_in
from libs.final import SWEEPER
from libs.schemas import CancelRequested, GenerationJob, Stream
from services.pipeline.deps import PipelineDeps
from services.pipeline.state import RunState


class Pickup(NamedTuple):
    state: RunState | None  # the checkpoint, None for a run never checkpointed
    cancel_requested_by: str | None  # a cancel already in the stream: "sweeper" or "stream"
    slots: list[Stored | None] | None  # the customer's waiting list and slots (`CustomerSlots.reads`)


def cancel_subject(generation_id: str) -> str:
    return f"mma.evt.{generation_id}.cancel_requested"


async def pick_up(deps: PipelineDeps, job: GenerationJob) -> Pickup:
    checkpoints, slots = deps.checkpoints, deps.slots
    # on one replica a direct get is the leader's answer, without the API's queue, JSON and base64
    cancel_read = Read(Stream.EVENTS.value, cancel_subject(job.generation_id),
                       leader=deps.settings.stream_replicas > 1)
    slot_reads = slots.reads(job.pass_id) if slots is not None else []
    stored = await last_in(deps.bus.js, [*checkpoints.reads(job.generation_id), cancel_read, *slot_reads])
    cancel, requested_by = stored[2], None
    if cancel is not None and not cancel.deleted:
        requested = CancelRequested.model_validate_json(cancel.data)
        requested_by = "sweeper" if requested.requested_by == SWEEPER else "stream"
    return Pickup(checkpoints.loaded(stored[:2]), requested_by, stored[3:] if slot_reads else None)
