"""The ops-plane row of a dead letter, and the dead letters reconcile counts.

A dead letter is kept in the retained stream (`libs.deadletter`); this row is the report of it
in `mega_admin` (record type `error`, category INVALID_MESSAGE or POISON_MESSAGE) that the /ops
error feed shows. Its id names the dead letter (consumer, stream, sequence), so projecting the
report twice, or replaying it after Postgres refused it once, leaves one row.
"""

from __future__ import annotations

import hashlib

from nats.js import JetStreamContext
from pydantic import JsonValue

from libs import deadletter
from libs.schemas import DeadLettered, ReconcileReport
from services.ledger import queries as q
from services.ledger.queries import Rows

DATA_MAX = 4000


def dead_letter_id(msg: DeadLettered) -> str:
    """Deterministic: the same dead letter projected twice is one row."""
    if msg.stream_seq is not None:
        by = f"{msg.consumer}:" if msg.consumer else ""
        return f"error:dlq:{by}{msg.original_stream}:{msg.stream_seq}"
    digest = hashlib.sha256(f"{msg.original_subject}\n{msg.data}".encode()).hexdigest()[:24]
    return f"error:dlq:{digest}"


def dead_letter_rows(msg: DeadLettered) -> Rows:
    """A message nobody could take becomes an ops-plane error row: nothing silently lost.

    NUL characters are replaced: jsonb refuses them. Undecodable data and rows Postgres refused
    are INVALID_MESSAGE; a handler that kept failing (a bug, any other error) is POISON_MESSAGE.
    """
    data = msg.data[:DATA_MAX].replace("\x00", "\ufffd")
    reason = msg.reason.replace("\x00", "\ufffd")
    code = msg.code or "INVALID_MESSAGE"
    detail: dict[str, JsonValue] = {
        "emoji": "💥",
        "level": "error",
        "category": "INVALID_MESSAGE" if code == "INVALID_MESSAGE" else "POISON_MESSAGE",
        "error_code": code,
        "message": reason,
        "reason": reason,
        "original_subject": msg.original_subject,
        "original_stream": msg.original_stream,
        "stream_seq": msg.stream_seq,
        "deliveries": msg.deliveries,
        "data": data,
        "data_truncated": len(msg.data) > DATA_MAX,
    }
    if msg.consumer is not None:
        detail["consumer"] = msg.consumer
        detail["dead_letter"] = {"stream": deadletter.DEAD_STREAM, "seq": msg.dead_letter_seq,
                                 "subject": deadletter.dead_subject(msg.consumer, msg.original_subject)}
        generation_id = _generation_of(msg.original_subject)
        if generation_id:
            detail["generation_id"] = generation_id
    return [(q.INSERT_ADMIN_LOG, (dead_letter_id(msg), "error", None, None, None, None, detail, msg.at))]


def _generation_of(subject: str) -> str | None:
    """`mma.evt.<generation>.<kind>` and `mma.job.<flow>.<generation>` name a generation."""
    parts = subject.split(".")
    if len(parts) == 4 and parts[:2] == ["mma", "evt"] and parts[2] not in ("ops", "cust", "billing"):
        return parts[2]
    if len(parts) >= 3 and parts[:2] in (["mma", "job"], ["mma", "cmd"]):
        return parts[-1]
    return None


MARK_HANDLED = """
update mega_admin
set mg_detail = mg_detail || jsonb_build_object($2::text, to_jsonb(now()))
where mg_id = any($1::text[])
"""

LEDGER = "ledger"


async def with_dead_letters(report: ReconcileReport, js: JetStreamContext | None) -> ReconcileReport:
    """The report plus what waits in the dead-letter stream.

    Events the ledger could not project are a breach (`dead_letters_waiting`: rows missing from
    MEGA until `replay-dead`); the other consumers' dead letters are counted in the totals (their
    generation was already failed and refunded when they were given up).
    """
    if js is None:
        return report
    per = await deadletter.counts(js)
    checks = {**report.checks, "dead_letters_waiting": per.get(LEDGER, 0)}
    totals = {**report.totals, "dead_letters": sum(per.values()),
              **{f"dead_letters_{name}": n for name, n in sorted(per.items())}}
    return ReconcileReport(ok=report.ok and not checks["dead_letters_waiting"], checks=checks,
                           breaches=report.breaches, totals=totals)
