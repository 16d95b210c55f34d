"""How a generation ends: its FIRST terminal event in EVENTS is final.

A run, the stuck sweeper and an exhausted job can each publish an end (`done` or
`failed`), and a redelivery or a publish after the dedupe window can repeat one. The
stream's order decides: the first `done`/`failed` is the generation's end and nothing
published after it replaces it. The ledger, the gateway (GET and SSE) and billing's
refund all ask this module, so they agree on which end counts.
"""

from __future__ import annotations

import asyncio

import nats.errors
import nats.js.errors

from libs.bus import Bus
from libs.errors import ServiceUnavailableError
from libs.schemas import MESSAGE_TYPES, TYPE_HEADER, BusMessage, GenerationDone, GenerationFailed, Stream
from libs.transient import NATS_AWAY

END_KINDS = ("done", "failed")
SWEEPER = "sweeper"  # CancelRequested.requested_by of the stuck sweeper: the run ends STUCK_TIMEOUT, refunded
STUCK_CODE = "STUCK_TIMEOUT"
STUCK_MESSAGE = "This generation took too long and was stopped. Your credits were refunded."

_UNAVAILABLE = NATS_AWAY


async def _get(bus: Bus, subject: str, first: bool) -> tuple[int, BusMessage] | None:
    """(stream seq, message) of the first (or last) EVENTS message on `subject`, None when there is none."""
    try:
        if first:
            raw = await bus.js.get_msg(Stream.EVENTS.value, seq=1, subject=subject, next=True)
        else:
            raw = await bus.js.get_last_msg(Stream.EVENTS.value, subject)
    except nats.js.errors.NotFoundError:
        return None
    except _UNAVAILABLE as exc:
        raise ServiceUnavailableError(f"EVENTS not answering for {subject}", subject=subject) from exc
    model = MESSAGE_TYPES.get((raw.headers or {}).get(TYPE_HEADER, ""))
    if model is None or raw.data is None:
        return None
    return int(raw.seq or 0), model.model_validate_json(raw.data)


async def last_event(bus: Bus, subject: str) -> BusMessage | None:
    """The newest EVENTS message on `subject`, decoded (None when there is none)."""
    found = await _get(bus, subject, first=False)
    return found[1] if found else None


async def final_end(bus: Bus, generation_id: str) -> tuple[int, GenerationDone | GenerationFailed] | None:
    """(stream seq, event) of the generation's end: its earliest `done` or `failed` (None while it runs)."""
    found = await asyncio.gather(*(_get(bus, f"mma.evt.{generation_id}.{kind}", first=True) for kind in END_KINDS))
    ends = [(seq, msg) for seq, msg in (f for f in found if f is not None)
            if isinstance(msg, GenerationDone | GenerationFailed)]
    return min(ends, key=lambda end: end[0]) if ends else None


async def final_event(bus: Bus, generation_id: str) -> GenerationDone | GenerationFailed | None:
    """The generation's end (see `final_end`)."""
    end = await final_end(bus, generation_id)
    return end[1] if end else None
