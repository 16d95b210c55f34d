"""`python -m services.ledger replay-dead`: re-project the events the ledger had to give up.

Once the cause is fixed (a constraint widened, a migration applied, a bug deployed away), each
waiting ledger dead letter is projected again, in stream order, with the same per-event
statements as the live consumer (`project_one`): rows are upserts by deterministic `mg_id`, so
a replay that is interrupted and run again leaves the same rows. A replayed dead letter leaves
the stream and its ops-plane row is marked `replayed_at`; one that is refused again stays
waiting, with the reason printed. `--discard` removes dead letters without projecting them (for
another consumer's, whose generation was already failed and refunded when it was given up).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
import structlog
from nats.js import JetStreamContext

from libs import deadletter
from libs.errors import MmaError
from libs.schemas import MESSAGE_TYPES, BusMessage
from services.ledger.deadletters import LEDGER, MARK_HANDLED
from services.ledger.deps import LedgerDeps
from services.ledger.handlers import EVENT_HANDLERS

log = structlog.get_logger("ledger.replay")

BATCH = 500


@dataclass
class ReplayReport:
    replayed: list[deadletter.DeadLetter] = field(default_factory=list)
    discarded: list[deadletter.DeadLetter] = field(default_factory=list)
    failed: list[tuple[deadletter.DeadLetter, str]] = field(default_factory=list)
    listed: list[deadletter.DeadLetter] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def lines(self) -> list[str]:
        out = [f"waiting {d.seq} {d.consumer} {d.subject} ({d.type_name}): {d.reason}" for d in self.listed]
        out += [f"replayed {d.seq} {d.subject} ({d.type_name})" for d in self.replayed]
        out += [f"discarded {d.seq} {d.consumer} {d.subject}" for d in self.discarded]
        out += [f"FAILED {d.seq} {d.subject} ({d.type_name}): {why}" for d, why in self.failed]
        out.append(f"dead letters: {len(self.replayed)} replayed, {len(self.discarded)} discarded, "
                   f"{len(self.failed)} failed, {len(self.listed)} listed")
        return out


def _decode(dead: deadletter.DeadLetter) -> BusMessage:
    model = MESSAGE_TYPES.get(dead.type_name or "")
    if model is None:
        raise ValueError(f"unknown message type {dead.type_name!r}: nothing to project")
    return model.model_validate_json(dead.data)


async def replay_dead(js: JetStreamContext, deps: LedgerDeps, *, subject: str | None = None,
                      consumer: str = LEDGER, dry_run: bool = False, discard: bool = False) -> ReplayReport:
    """Replay (or, with `discard`, drop) the waiting dead letters of `consumer` on `subject`."""
    if consumer != LEDGER and not (discard or dry_run):
        raise SystemExit(f"only the ledger's dead letters can be replayed here; {consumer!r}'s need --discard")
    report = ReplayReport()
    seen = 0
    while True:
        batch = await deadletter.waiting(js, deadletter.filter_for(consumer, subject), limit=BATCH, after=seen)
        if not batch:
            break
        seen = batch[-1].seq
        for dead in batch:
            if dry_run:
                report.listed.append(dead)
            elif discard:
                await deadletter.remove(js, dead.seq)
                report.discarded.append(dead)
            else:
                await _replay_one(js, deps, dead, report)
        if len(batch) < BATCH:
            break
    handled = [(d, "replayed_at") for d in report.replayed] + [(d, "discarded_at") for d in report.discarded]
    for mark in ("replayed_at", "discarded_at"):
        ids = [d.record_id for d, m in handled if m == mark]
        if ids:
            async with deps.pool.acquire() as conn:
                await conn.execute(MARK_HANDLED, ids, mark)
    return report


async def _replay_one(js: JetStreamContext, deps: LedgerDeps, dead: deadletter.DeadLetter,
                      report: ReplayReport) -> None:
    """Project it; on success it leaves the stream, on failure it stays waiting."""
    try:
        msg = _decode(dead)
        handler = EVENT_HANDLERS.get(type(msg))
        if handler is None:
            raise ValueError(f"the ledger does not project {type(msg).__name__}")
        await handler(msg, deps)
    except (ValueError, MmaError, asyncpg.PostgresError) as exc:  # includes pydantic's ValidationError
        why = f"{type(exc).__name__}: {exc}"[:500]
        log.warning("ledger.dead_letter_replay_failed", dead_letter_seq=dead.seq, subject=dead.subject, reason=why)
        report.failed.append((dead, why))
        return
    await deadletter.remove(js, dead.seq)
    log.info("ledger.dead_letter_replayed", dead_letter_seq=dead.seq, subject=dead.subject, type=dead.type_name)
    report.replayed.append(dead)
