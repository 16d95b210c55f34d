"""A customer's reads: balance, generations, steps, history, events, likes, credit rows.

Reads never 404 on a customer (a missing pass id reads as 0 credits); a missing
generation raises NotFoundError, which the bus carries back to the caller.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from asyncpg import Record

from libs.errors import NotFoundError
from libs.schemas import (
    CreditTxnList,
    CustomerEvents,
    CustomerHistory,
    CustomerView,
    DeleteResult,
    DurationStats,
    EventList,
    GenerationCredits,
    GenerationView,
    GetCustomer,
    GetGeneration,
    HistoryPage,
    LikedItem,
    LikeList,
    LikeWindow,
    ListSteps,
    RecentDurations,
    SoftDeleteHistory,
    StepList,
)
from services.ledger import read_queries as rq
from services.ledger.deps import LedgerDeps
from services.ledger.views import (
    credit_txn_view,
    customer_view,
    event_view,
    feedback_view,
    generation_view,
    session_view,
    step_view,
)

log = structlog.get_logger("ledger")


async def on_get_customer(req: GetCustomer, deps: LedgerDeps) -> CustomerView:
    async with deps.pool.acquire() as conn:
        row = await conn.fetchrow(rq.GET_CUSTOMER, req.pass_id)
    return customer_view(row, req.pass_id)


async def on_get_generation(req: GetGeneration, deps: LedgerDeps) -> GenerationView:
    async with deps.pool.acquire() as conn:
        row = await conn.fetchrow(rq.GET_GENERATION, req.generation_id)
    if row is None:
        raise NotFoundError(f"generation {req.generation_id} not found", generation_id=req.generation_id)
    return generation_view(row)


async def on_recent_durations(req: RecentDurations, deps: LedgerDeps) -> DurationStats:
    async with deps.pool.acquire() as conn:
        row = await conn.fetchrow(rq.RECENT_DURATIONS, max(1, int(req.limit)))
    samples = int(row["samples"] or 0) if row else 0
    return DurationStats(mean_s=float(row["mean_s"]) if row and samples else None, samples=samples)


async def on_list_steps(req: ListSteps, deps: LedgerDeps) -> StepList:
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(rq.LIST_STEPS, req.generation_id)
    return StepList(steps=[step_view(r) for r in rows])


async def on_customer_history(req: CustomerHistory, deps: LedgerDeps) -> HistoryPage:
    """Newest first, soft-deleted rows left out; pages by created_at (< cursor)."""
    limit = rq.page(req.limit)
    async with deps.pool.acquire() as conn:
        customer = await conn.fetchrow(rq.GET_CUSTOMER, req.pass_id)
        gens = await conn.fetch(rq.HISTORY_ROWS, req.pass_id, "generation", req.cursor, limit + 1)
        sessions = await conn.fetch(rq.HISTORY_ROWS, req.pass_id, "session", req.cursor, limit)
        feedbacks = await conn.fetch(rq.HISTORY_ROWS, req.pass_id, "feedback", req.cursor, limit)
        txns = await conn.fetch(rq.HISTORY_ROWS, req.pass_id, "credit_transaction", req.cursor, limit)
    has_more = len(gens) > limit
    gens = gens[:limit]
    view = customer_view(customer, req.pass_id)
    return HistoryPage(
        pass_id=req.pass_id,
        credits=view.credits,
        expires_at=view.expires_at,
        generations=[generation_view(r) for r in gens],
        sessions=[session_view(r) for r in sessions],
        feedbacks=[feedback_view(r) for r in feedbacks],
        credit_txns=[credit_txn_view(r) for r in txns],
        next_cursor=gens[-1]["mg_created_at"] if has_more and gens else None,
        has_more=has_more,
    )


async def on_customer_events(req: CustomerEvents, deps: LedgerDeps) -> EventList:
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(rq.CUSTOMER_EVENTS, req.pass_id, rq.page(req.limit))
    return EventList(events=[event_view(r) for r in rows])


async def on_like_window(req: LikeWindow, deps: LedgerDeps) -> LikeList:
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(rq.LIKE_WINDOW, req.pass_id, rq.page(req.limit))
    return LikeList(items=liked_items(rows))


def liked_items(rows: Sequence[Record] | Sequence[dict[str, Any]]) -> list[LikedItem]:
    """LIKE_WINDOW's rows (or RUN_START's JSON of them) as the taste window's items, newest first."""
    items = []
    for row in rows:
        tags = row["tags"]
        items.append(LikedItem(
            generation_id=row["mg_generation_id"], output_url=row["mg_output_url"], prompt=row["mg_prompt"],
            tags=[str(t) for t in tags] if isinstance(tags, list) else [],
        ))
    return items


async def on_generation_credits(req: GenerationCredits, deps: LedgerDeps) -> CreditTxnList:
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(rq.CREDIT_TXNS_OF_GENERATION, req.generation_id)
    return CreditTxnList(txns=[credit_txn_view(r) for r in rows])


async def on_soft_delete_history(req: SoftDeleteHistory, deps: LedgerDeps) -> DeleteResult:
    """Only the owner's rows: another pass id's row with the same id is left alone."""
    bare = req.id.removeprefix("generation:") if req.id.startswith("generation:") else None
    async with deps.pool.acquire() as conn:
        status = await conn.execute(rq.SOFT_DELETE, req.pass_id, req.id, bare)
    count = int(status.split()[-1])
    log.info("ledger.history_deleted", pass_id=req.pass_id, id=req.id, deleted_count=count)
    return DeleteResult(deleted_count=count)
