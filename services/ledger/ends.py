"""Which end of a generation the ledger keeps: its first end in the EVENTS stream (libs/final.py).

Events are projected in stream order, except after a redelivery: a batch nak'ed while Postgres
was away can come back after later events. So when the row already holds a different end, the
stream decides: the stored end stays unless the incoming one is the stream's first end, which
then replaces it (billing refunds, and the gateway shows, by the stream's first end too).
"""

from __future__ import annotations

from enum import Enum

import structlog

from libs.bus import Bus
from libs.final import final_event
from libs.schemas import GenerationDone, GenerationFailed
from services.ledger import queries as q
from services.ledger.adapters.pg import Row

log = structlog.get_logger("ledger")


class EndAction(Enum):
    APPLY = "apply"  # no end stored yet, or this same end again (a redelivery: its statements are idempotent)
    REPLACE = "replace"  # another end was projected first, but this one is first in the stream
    IGNORE = "ignore"  # a late end: the stored one came first


def _same_end(a: GenerationDone | GenerationFailed, b: GenerationDone | GenerationFailed) -> bool:
    if type(a) is not type(b) or a.status is not b.status:
        return False
    return isinstance(a, GenerationDone) or (isinstance(b, GenerationFailed) and a.message == b.message)


async def end_action(row: Row, msg: GenerationDone | GenerationFailed, bus: Bus | None) -> EndAction:
    """What projecting `msg` does to the generation `row` (locked by the caller)."""
    stored = row["mg_mma_status"]
    if stored not in q.TERMINAL_STATUSES:
        return EndAction.APPLY
    if stored == msg.status.value and (isinstance(msg, GenerationDone) or row["mg_error"] == msg.message):
        return EndAction.APPLY
    first = await final_event(bus, msg.generation_id) if bus is not None else None
    if first is not None and _same_end(first, msg):
        log.warning("ledger.end_replaced", generation_id=msg.generation_id, stored=stored, first=msg.status.value)
        return EndAction.REPLACE
    log.info("ledger.late_end_ignored", generation_id=msg.generation_id, stored=stored, late=msg.status.value)
    return EndAction.IGNORE
