"""Projection of EVENTS into MEGA: idempotent per event, and in batches of them.

Each handler commits its transaction before it returns, and the bus acks only after
that, so a crash redelivers instead of losing a row. Database outages raise
ServiceUnavailableError (the bus naks and redelivers for ever); a row Postgres refuses as
bad data is not worth a retry and becomes InvalidMessageError, which the bus keeps in the
retained dead-letter stream and reports to the ops plane (`replay-dead` re-projects it).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

import asyncpg
import structlog

from libs.errors import InvalidMessageError, ServiceUnavailableError
from libs.schemas import (
    MMA_VARS_VERSION,
    BusMessage,
    CancelRequested,
    CustomerEventRecorded,
    DeadLettered,
    EventType,
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
    StepPhase,
    StepRecorded,
    status_can_move,
)
from services.ledger import queries as q
from services.ledger.adapters.pg import UNAVAILABLE
from services.ledger.deadletters import dead_letter_rows
from services.ledger.deps import LedgerDeps
from services.ledger.ends import EndAction, end_action
from services.ledger.pool import fingertips_vars
from services.ledger.staging import SET_FORMS
from services.ledger.views import merge_vars, with_scan_line

log = structlog.get_logger("ledger")

M = TypeVar("M", bound=BusMessage)
EventHandler = Callable[[M, LedgerDeps], Awaitable[None]]
Rows = list[tuple[str, tuple[Any, ...]]]

SCAN_LINES_MAX = 1000
STEP_STATUS = {StepPhase.STARTED: "pending", StepPhase.SUCCEEDED: "succeeded", StepPhase.FAILED: "failed"}


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


def _initial_vars(msg: GenerationAccepted) -> dict[str, Any]:
    """The canonical variable map as far as the request tells (the pipeline fills the rest)."""
    req = msg.request
    assets = {
        "product_image_id": req.assets.product_image_url,
        "logo_image_id": req.assets.logo_image_url,
        "inspiration_image_ids": list(req.assets.inspiration_image_urls),
        "style_hero_image_id": req.assets.style_hero_image_url,
        "input_still_image_id": req.assets.input_still_image_url,
        "input_still_generation_id": req.assets.input_still_generation_id,
        "end_image_id": req.assets.end_image_url,
    }
    inputs = {
        "userBrief": req.inputs.user_brief,
        "style": req.inputs.style,
        "motion_user_brief": req.inputs.motion_user_brief,
        "movement_style": req.inputs.movement_style,
        "aspect_ratio": req.inputs.aspect_ratio,
        "type_for_me": req.inputs.type_for_me,
        "suggest_only": req.inputs.suggest_only,
        "duration_s": req.inputs.duration_s,
    }
    return {
        "version": MMA_VARS_VERSION,
        "mode": msg.flow.mode,
        "assets": {k: v for k, v in assets.items() if v not in (None, [])},
        "inputs": {k: v for k, v in inputs.items() if v not in (None, "")},
        "feedback": req.feedback.model_dump(),
        "history": {"vision_intelligence": req.vision_intelligence},
        **fingertips_vars(msg),
    }


# --------------------------------------------------------------------------- independent events
# Each of these is a list of (statement, args) rows of idempotent statements. One event runs
# its rows in one transaction; a batch runs them grouped by statement, set-based (`staging`).


def _accepted_rows(msg: GenerationAccepted) -> Rows:
    mode = msg.flow.mode
    meta: dict[str, Any] = {"flow": msg.flow.value, "price": msg.price, "request_id": msg.request_id}
    if msg.pool is not None:
        meta["pool"] = msg.pool.model_dump()
    if msg.request.settings:
        meta["settings_overrides"] = msg.request.settings
    parent = f"generation:{msg.parent_generation_id}" if msg.parent_generation_id else None
    return [
        (q.ENSURE_CUSTOMER, (msg.pass_id,)),
        (q.UPSERT_ACCEPTED, (msg.generation_id, msg.pass_id, msg.session_id, parent, msg.platform,
                             "motion" if mode == "video" else "image", "video" if mode == "video" else "image", mode,
                             _initial_vars(msg), meta, msg.at)),
    ]


def _status_rows(msg: StatusChanged) -> Rows:
    return [
        (q.ENSURE_CUSTOMER, (msg.pass_id,)),
        (q.MOVE_STATUS, (msg.generation_id, msg.pass_id, msg.status.value, msg.status.mg_status, msg.at,
                         q.STATUS_ORDER_VALUES)),
    ]


def _step_rows(msg: StepRecorded) -> Rows:
    return [
        (q.ENSURE_CUSTOMER, (msg.pass_id,)),
        (q.ENSURE_GENERATION, (msg.generation_id, msg.pass_id, msg.at)),
        (q.UPSERT_STEP, (msg.generation_id, msg.pass_id, msg.step_no, msg.step_type, msg.provider, msg.model,
                         msg.latency_ms, msg.payload, STEP_STATUS[msg.phase], msg.at)),
    ]


def _session_rows(msg: SessionStarted) -> Rows:
    return [
        (q.ENSURE_CUSTOMER, (msg.pass_id,)),
        (q.INSERT_SESSION, (msg.session_id, msg.pass_id, msg.platform, msg.title, msg.meta, msg.at)),
    ]


def _feedback_rows(msg: FeedbackRecorded) -> Rows:
    return [
        (q.ENSURE_CUSTOMER, (msg.pass_id,)),
        (q.INSERT_FEEDBACK, (msg.feedback_id, msg.pass_id, msg.generation_id, msg.session_id, msg.result_type,
                             msg.platform, msg.prompt, msg.comment, msg.image_url, msg.video_url,
                             {"liked": msg.liked}, msg.at)),
    ]


def _ops_rows(msg: OpsLogged) -> Rows:
    """The actor is named in mg_detail; mg_actor_pass_id only when it is a stored customer (query)."""
    detail: dict[str, Any] = {"level": msg.level, **msg.detail}
    if msg.actor_pass_id:
        detail.setdefault("actor_pass_id", msg.actor_pass_id)
    return [(q.INSERT_ADMIN_LOG, (msg.msg_id(), msg.level, msg.actor_pass_id, msg.route, msg.method,
                                  msg.http_status, detail, msg.at))]


# --------------------------------------------------------------------------- order-sensitive events
# Read-modify-write of a generation's vars, or a conditional effect: run one by one, in stream order.


async def _apply_scan_line(conn: q.Conn, msg: ScanLine, _deps: LedgerDeps) -> None:
    """Persisted at once, so a reload replays what the customer was told."""
    if not 0 <= msg.index < SCAN_LINES_MAX:
        raise InvalidMessageError(f"scan line index {msg.index} out of range")
    await conn.execute(q.ENSURE_CUSTOMER, msg.pass_id)
    await conn.execute(q.ENSURE_GENERATION, msg.generation_id, msg.pass_id, msg.at)
    row = await conn.fetchrow(q.LOCK_GENERATION, msg.generation_id)
    await conn.execute(q.SET_VARS, msg.generation_id, with_scan_line(row["mg_mma_vars"] or {}, msg.index, msg.text))


async def _apply_done(conn: q.Conn, msg: GenerationDone, deps: LedgerDeps) -> None:
    """Final row; the merge keeps scan lines already persisted, status never moves back, and an end
    stored before it stays unless the stream says this one came first (`ends`)."""
    await conn.execute(q.ENSURE_CUSTOMER, msg.pass_id)
    await conn.execute(q.ENSURE_GENERATION, msg.generation_id, msg.pass_id, msg.at)
    row = await conn.fetchrow(q.LOCK_GENERATION, msg.generation_id)
    action = await end_action(row, msg, deps.bus)
    if action is EndAction.IGNORE:
        return
    merged = merge_vars(row["mg_mma_vars"] or {}, msg.vars)
    current = row["mg_mma_status"]
    if action is EndAction.APPLY and current != msg.status.value and not status_can_move(current, msg.status.value):
        await conn.execute(q.SET_VARS, msg.generation_id, merged)
        return
    content_type = {"image": "image", "motion": "video", "text": "text"}[msg.content_type]
    await conn.execute(
        q.FINISH_GENERATION, msg.generation_id, msg.status.value, msg.status.mg_status, merged,
        msg.output_url, msg.output_key, msg.prompt, msg.provider, msg.model,
        msg.output_url if msg.content_type == "image" else None,
        msg.output_url if msg.content_type == "motion" else None,
        content_type,
    )


def _step_error(msg: GenerationFailed) -> dict[str, Any]:
    error: dict[str, Any] = {"error_code": msg.code, "message": msg.message}
    for key in ("provider_http_status", "retry"):
        if msg.detail.get(key) is not None:
            error[key] = msg.detail[key]
    return error


def _ops_detail(msg: GenerationFailed) -> dict[str, Any]:
    detail: dict[str, Any] = {"level": "error", **msg.detail}
    detail.update(generation_id=msg.generation_id, pass_id=msg.pass_id, error_code=msg.code,
                  message=msg.message, step_type=msg.step_type)
    return detail


async def _apply_failed(conn: q.Conn, msg: GenerationFailed, deps: LedgerDeps) -> None:
    """Both log planes in one transaction: generation + step (run), error row (ops)."""
    raw_http = msg.detail.get("http")
    http: dict[str, Any] = raw_http if isinstance(raw_http, dict) else {}
    route = msg.detail.get("route") or http.get("route")
    http_status = http.get("status") if isinstance(http.get("status"), int) else None
    await conn.execute(q.ENSURE_CUSTOMER, msg.pass_id)
    await conn.execute(q.ENSURE_GENERATION, msg.generation_id, msg.pass_id, msg.at)
    row = await conn.fetchrow(q.LOCK_GENERATION, msg.generation_id)
    action = await end_action(row, msg, deps.bus)
    if action is EndAction.IGNORE:
        return
    merged = merge_vars(row["mg_mma_vars"] or {}, msg.vars)
    current = row["mg_mma_status"]
    if action is EndAction.REPLACE or current == msg.status.value or status_can_move(current, msg.status.value):
        await conn.execute(q.FAIL_GENERATION, msg.generation_id, msg.status.value, msg.status.mg_status,
                           merged, msg.message)
    else:
        await conn.execute(q.SET_VARS, msg.generation_id, merged)
    if msg.step_no is not None:
        await conn.execute(q.SET_STEP_ERROR, msg.generation_id, msg.step_no, _step_error(msg))
    elif msg.step_type:
        await conn.execute(q.SET_STEP_ERROR_BY_TYPE, msg.generation_id, msg.step_type, _step_error(msg))
    await conn.execute(
        q.INSERT_ADMIN_LOG, f"error:{msg.generation_id}", "error", msg.pass_id, route,
        msg.detail.get("method"), http_status, _ops_detail(msg), msg.at,
    )


async def _apply_customer_event(conn: q.Conn, msg: CustomerEventRecorded, _deps: LedgerDeps) -> None:
    """The preference delta applies only with the newly inserted event row: once per event id."""
    hard_blocks = list(msg.add_hard_blocks)
    payload_block = msg.payload.get("hard_block")
    if msg.event_type == EventType.PREFERENCE_SET and isinstance(payload_block, str) and payload_block:
        hard_blocks.append(payload_block)
    meta = {"event_type": msg.event_type, "payload": msg.payload, "request_id": msg.request_id}
    await conn.execute(q.ENSURE_CUSTOMER, msg.pass_id)
    inserted = await conn.fetchval(q.INSERT_EVENT, msg.event_id, msg.pass_id, msg.generation_id, meta, msg.at)
    if inserted is not None and (hard_blocks or msg.tag_weight_deltas):
        await conn.execute(q.APPLY_PREFERENCE_DELTA, msg.pass_id, hard_blocks, dict(msg.tag_weight_deltas))


# --------------------------------------------------------------------------- one event, or a batch

ROWS: dict[type[BusMessage], Callable[[Any], Rows]] = {
    GenerationAccepted: _accepted_rows,
    StatusChanged: _status_rows,
    StepRecorded: _step_rows,
    SessionStarted: _session_rows,
    FeedbackRecorded: _feedback_rows,
    OpsLogged: _ops_rows,
    DeadLettered: dead_letter_rows,
}
APPLY: dict[type[BusMessage], Callable[[q.Conn, Any, LedgerDeps], Awaitable[None]]] = {
    ScanLine: _apply_scan_line,
    GenerationDone: _apply_done,
    GenerationFailed: _apply_failed,
    CustomerEventRecorded: _apply_customer_event,
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


class _Run:
    """Independent events gathered per statement, flushed before anything order-sensitive.

    Their statements touch disjoint rows or commute (forward-only status, step-rank guard,
    `on conflict do nothing`), except row creation of a generation, which `conflicts` guards.
    A flush writes each statement's first row per key in one set-based statement (`staging`);
    a key's later rows (a status moving on, a step finishing, a redelivery) follow with
    `executemany`, in stream order.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.firsts: dict[str, list[tuple[Any, ...]]] = {statement: [] for statement in GROUP_ORDER}
        self.later: dict[str, list[tuple[Any, ...]]] = {statement: [] for statement in GROUP_ORDER}
        self.keys: dict[str, set[Hashable]] = {statement: set() for statement in GROUP_ORDER}
        self.gen_rank: dict[str, int] = {}  # generation id -> highest CREATES_GENERATION rank in the run

    def conflicts(self, rows: Rows) -> bool:
        return any(CREATES_GENERATION[st] < self.gen_rank.get(args[0], -1)
                   for st, args in rows if st in CREATES_GENERATION)

    def add(self, rows: Rows) -> None:
        for statement, args in rows:
            if statement in CREATES_GENERATION:
                self.gen_rank[args[0]] = max(self.gen_rank.get(args[0], -1), CREATES_GENERATION[statement])
            key = SET_FORMS[statement].key(args)
            if key not in self.keys[statement]:
                self.keys[statement].add(key)
                self.firsts[statement].append(args)
            elif statement not in FIRST_ONLY:
                self.later[statement].append(args)

    async def flush(self, conn: q.Conn) -> None:
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
    """
    started = time.perf_counter()
    run = _Run()
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
    except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, asyncpg.CardinalityViolationError) as exc:
        raise InvalidMessageError(f"a batch of {len(batch)} refused by Postgres: {type(exc).__name__}: {exc}") from exc
    except UNAVAILABLE as exc:
        raise ServiceUnavailableError(f"Postgres unavailable: {type(exc).__name__}: {exc}") from exc
    log.info("ledger.batch_projected", count=len(batch),
             duration_ms=round((time.perf_counter() - started) * 1000, 2))
