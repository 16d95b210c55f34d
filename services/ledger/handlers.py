"""Projection of EVENTS into MEGA: idempotent per event, and in batches of them.

Each handler commits its transaction before it returns, and the bus acks only after
that, so a crash redelivers instead of losing a row. Database outages raise
ServiceUnavailableError (the bus naks and redelivers for ever); a row Postgres refuses as
bad data is not worth a retry and becomes InvalidMessageError, which the bus keeps in the
retained dead-letter stream and reports to the ops plane (`replay-dead` re-projects it).
What each event writes is in `writes` (and `deadletters`).
"""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar, cast

import asyncpg
import structlog

from libs.errors import InvalidMessageError, ServiceUnavailableError
from libs.schemas import (
    BusMessage,
    CancelRequested,
    CustomerEventRecorded,
    DeadLettered,
    FeedbackRecorded,
    GenerationAccepted,
    GenerationDone,
    GenerationFailed,
    GenerationRefunded,
    GenerationRejected,
    OpsLogged,
    ScanLine,
    SessionStarted,
    StatusChanged,
    StepRecorded,
)
from services.ledger import queries as q
from services.ledger.adapters.pg import UNAVAILABLE, Conn
from services.ledger.deadletters import dead_letter_rows
from services.ledger.deps import LedgerDeps
from services.ledger.queries import Rows
from services.ledger.staging import SET_FORMS
from services.ledger.writes import (
    accepted_rows,
    apply_customer_event,
    apply_done,
    apply_failed,
    apply_scan_line,
    feedback_rows,
    ops_rows,
    session_rows,
    status_rows,
    step_rows,
)

log = structlog.get_logger("ledger")
ROLLBACK_TRIES = 4  # runs of a batch Postgres rolls back as a deadlock victim before the bus redelivers it
KNOWN_CUSTOMERS_MAX = 100_000  # customers remembered as ensured (then forgotten all at once)
ROLLBACK_JITTER_S = 0.02  # a random wait up to this (times the attempt) so the two ledgers do not meet again

M = TypeVar("M", bound=BusMessage)
EventHandler = Callable[[M, LedgerDeps], Awaitable[None]]


def projection(handler: EventHandler[M]) -> EventHandler[M]:
    """A refused row is dead-lettered at once; Postgres away is retried (for ever); anything else
    (a bug) is retried up to `max_deliveries`, then dead-lettered. One canonical line per event."""

    @functools.wraps(handler)
    async def run(msg: M, deps: LedgerDeps) -> None:
        started = time.perf_counter()
        try:
            await handler(msg, deps)
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
            raise InvalidMessageError(f"{type(msg).__name__} refused by Postgres: {type(exc).__name__}: {exc}") from exc
        except UNAVAILABLE as exc:
            raise ServiceUnavailableError(f"Postgres unavailable: {type(exc).__name__}: {exc}") from exc
        log.info("ledger.event_projected", type=type(msg).__name__,
                 duration_ms=round((time.perf_counter() - started) * 1000, 2))

    return run


# --------------------------------------------------------------------------- one event, or a batch

ROWS: dict[type[BusMessage], Callable[[Any], Rows]] = {
    GenerationAccepted: accepted_rows,
    StatusChanged: status_rows,
    StepRecorded: step_rows,
    SessionStarted: session_rows,
    FeedbackRecorded: feedback_rows,
    OpsLogged: ops_rows,
    DeadLettered: dead_letter_rows,
}
APPLY: dict[type[BusMessage], Callable[[Conn, Any, LedgerDeps], Awaitable[None]]] = {
    ScanLine: apply_scan_line,
    GenerationDone: apply_done,
    GenerationFailed: apply_failed,
    CustomerEventRecorded: apply_customer_event,
}
# Nothing to project: no charge happened (rejected), the refund's credit row was written by
# CreditApply, and a cancel is answered by a `failed` event (status cancelled) that is.
NOTHING: tuple[type[BusMessage], ...] = (GenerationRejected, GenerationRefunded, CancelRequested)


async def project_one(msg: BusMessage, deps: LedgerDeps) -> None:
    """One event in its own transaction: the per-message path, and the fallback of a refused batch."""
    rows_of, apply = ROWS.get(type(msg)), APPLY.get(type(msg))
    if rows_of is None and apply is None:
        return
    async with deps.pool.acquire() as conn, conn.transaction():
        if apply is not None:
            await apply(conn, msg, deps)
        elif rows_of is not None:
            for statement, args in rows_of(msg):
                await conn.execute(statement, *args)


EVENT_HANDLERS: dict[type[BusMessage], EventHandler[Any]] = {
    msg_type: projection(project_one) for msg_type in (*ROWS, *APPLY, *NOTHING)
}

# The statement groups of a batch, in the order they run; each keeps stream order inside.
GROUP_ORDER = (q.ENSURE_CUSTOMER, q.INSERT_SESSION, q.UPSERT_ACCEPTED, q.MOVE_STATUS, q.ENSURE_GENERATION,
               q.UPSERT_STEP, q.INSERT_FEEDBACK, q.INSERT_ADMIN_LOG)
# Statements that can create a generation row, by group rank. Whichever comes first creates
# it (its created-at, status, pass id), so a later-ranked one must never jump ahead of an
# earlier-ranked one for the same generation: that ends the run.
CREATES_GENERATION = {q.UPSERT_ACCEPTED: 0, q.MOVE_STATUS: 1, q.ENSURE_GENERATION: 2}
# Insert-if-missing keyed by their first argument: only the first per key can do anything.
FIRST_ONLY = (q.ENSURE_CUSTOMER, q.ENSURE_GENERATION)
# key of a row, keys seen, first rows, later rows (None: first only), CREATES_GENERATION rank (or None)
_Slot = tuple[Callable[[Sequence[object]], Hashable], set[Hashable], list[tuple[object, ...]],
              list[tuple[object, ...]] | None, int | None]


class _CustomerForgotten(Exception):
    """A batch refused because a customer this process had ensured is gone (deleted out of band)."""


class _Run:
    """Independent events gathered per statement, flushed before anything order-sensitive.

    Their statements touch disjoint rows or commute (forward-only status, step-rank guard,
    `on conflict do nothing`), except row creation of a generation, which `conflicts` guards.
    A flush writes each statement's first row per key in one set-based statement (`staging`);
    a key's later rows (a status moving on, a step finishing, a redelivery) follow with
    `executemany`, in stream order.
    """

    def __init__(self, known_customers: set[str] | None = None) -> None:
        self.known = known_customers if known_customers is not None else set()
        self.ensured: set[str] = set()  # customers this run's transaction ensures (known once it commits)
        self.relied = False  # an insert was skipped for a customer known from an earlier batch
        self.reset()

    def reset(self) -> None:
        self.firsts: dict[str, list[tuple[object, ...]]] = {statement: [] for statement in GROUP_ORDER}
        self.later: dict[str, list[tuple[object, ...]]] = {statement: [] for statement in GROUP_ORDER}
        self.keys: dict[str, set[Hashable]] = {statement: set() for statement in GROUP_ORDER}
        self.gen_rank: dict[object, int] = {}  # generation id -> highest CREATES_GENERATION rank in the run
        # per statement, what `add` needs of it in one lookup (a backlog adds thousands of rows a batch)
        self.slots: dict[str, _Slot] = {
            st: (SET_FORMS[st].key, self.keys[st], self.firsts[st], None if st in FIRST_ONLY else self.later[st],
                 CREATES_GENERATION.get(st))
            for st in GROUP_ORDER
        }

    def conflicts(self, rows: Rows) -> bool:
        return any(CREATES_GENERATION[st] < self.gen_rank.get(args[0], -1)
                   for st, args in rows if st in CREATES_GENERATION)

    def add(self, rows: Rows) -> None:
        gen_rank, known = self.gen_rank, self.known
        for statement, args in rows:
            if statement == q.ENSURE_CUSTOMER:
                if args[0] in self.ensured:  # this transaction ensures it already
                    continue
                if args[0] in known:  # a committed batch of this process did
                    self.relied = True
                    continue
                self.ensured.add(cast(str, args[0]))
            key_of, seen, firsts, later, rank = self.slots[statement]
            if rank is not None and rank > gen_rank.get(args[0], -1):
                gen_rank[args[0]] = rank
            key = key_of(args)
            if key not in seen:
                seen.add(key)
                firsts.append(args)
            elif later is not None:
                later.append(args)

    async def flush(self, conn: Conn) -> None:
        for statement, rows in self.firsts.items():
            if rows:
                form = SET_FORMS[statement]
                await conn.execute(form.sql, *form.params(rows))
            if self.later[statement]:
                await conn.executemany(statement, self.later[statement])
        self.reset()


async def project_batch(batch: list[BusMessage], deps: LedgerDeps) -> None:
    """A batch in ONE transaction, leaving exactly the rows projecting its events one by one leaves.

    Runs of independent events become one set-based statement per statement (see `_Run`);
    order-sensitive ones (done, failed, scan lines, customer events) run one by one in stream
    order in between. Bad data anywhere rolls back the whole batch: the bus then re-runs it one
    event at a time, with the per-event statements (so does a key collision `_Run` should have
    prevented: Postgres refuses a statement that updates one row twice).

    Two ledgers project different batches at once, in stream order, not key order, so Postgres
    may pick one of two batches that lock the same rows in turn as a deadlock victim: that batch,
    rolled back whole, is run again here at once (`ROLLBACK_TRIES`), instead of waiting for the
    bus's growing redelivery delay while the other ledger's later events land (a step seen
    missing for seconds).
    """
    started = time.perf_counter()
    for attempt in range(1, ROLLBACK_TRIES + 1):
        try:
            await _project_once(batch, deps)
            break
        except _CustomerForgotten:
            log.warning("ledger.customer_row_missing", count=len(batch))
            await _project_once(batch, deps)  # every customer ensured this time
            break
        except asyncpg.TransactionRollbackError as exc:  # deadlock victim, serialization failure
            if attempt == ROLLBACK_TRIES:
                raise ServiceUnavailableError(f"Postgres unavailable: {type(exc).__name__}: {exc}") from exc
            log.info("ledger.batch_rolled_back", count=len(batch), attempt=attempt, error=type(exc).__name__)
            await asyncio.sleep(random.uniform(0, ROLLBACK_JITTER_S * attempt))
    log.info("ledger.batch_projected", count=len(batch),
             duration_ms=round((time.perf_counter() - started) * 1000, 2))


async def _project_once(batch: list[BusMessage], deps: LedgerDeps) -> None:
    known = deps.known_customers
    run = _Run(known)
    try:
        async with deps.pool.acquire() as conn, conn.transaction():
            for msg in batch:
                rows_of, apply = ROWS.get(type(msg)), APPLY.get(type(msg))
                if rows_of is not None:
                    rows = rows_of(msg)
                    if run.conflicts(rows):
                        await run.flush(conn)
                    run.add(rows)
                elif apply is not None:
                    await run.flush(conn)
                    await apply(conn, msg, deps)
            await run.flush(conn)
    except asyncpg.ForeignKeyViolationError as exc:
        if run.relied:  # a customer remembered as ensured was deleted out of band: ensure every one again
            known.clear()
            raise _CustomerForgotten from exc
        raise InvalidMessageError(f"a batch of {len(batch)} refused by Postgres: {type(exc).__name__}: {exc}") from exc
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.CardinalityViolationError) as exc:
        raise InvalidMessageError(f"a batch of {len(batch)} refused by Postgres: {type(exc).__name__}: {exc}") from exc
    except asyncpg.TransactionRollbackError:
        raise  # `project_batch` runs it again
    except UNAVAILABLE as exc:
        raise ServiceUnavailableError(f"Postgres unavailable: {type(exc).__name__}: {exc}") from exc
    if len(known) + len(run.ensured) > KNOWN_CUSTOMERS_MAX:
        known.clear()
    known.update(run.ensured)
