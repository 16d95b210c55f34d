"""The fingertips pool in the ledger: draw, refund and read, each one SQL function call.

The money rules live in `mega_pool_draw` / `mega_pool_refund`
(supabase/migrations/20261201000000_fingertips_pool.sql): the customer row is locked, so two
edits of one customer take turns and never overdraw; every row's id is its ref, so a
redelivered draw or refund changes nothing. This module only calls them and shapes replies.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import Any

import structlog

from libs.schemas import (
    ChargedItem,
    ChargedList,
    DrawnUnfinished,
    GenerationAccepted,
    GetPool,
    Model,
    PoolDraw,
    PoolDrawn,
    PoolOutcome,
    PoolRefund,
    PoolRefunded,
    PoolView,
    RpcRequest,
)
from services.ledger.deps import LedgerDeps
from services.ledger.views import effective_credits

log = structlog.get_logger("ledger")

POOL_DRAW = """
select outcome, credits, pool, expires_at, pool_before, matchas_deducted
from mega_pool_draw($1, $2, $3::numeric, $4)
"""

POOL_REFUND = "select outcome, amount, credits, pool, expires_at from mega_pool_refund($1)"

# Drawn, not refunded, not terminal (or no generation row at all), and idle for `$1` seconds: the draw is
# older than that, and so is the last change of the generation row or of its step rows.
DRAWN_UNFINISHED = """
with candidates as materialized (
    select d.mg_generation_id as gid, d.mg_pass_id, d.mg_created_at, g.mg_mma_status, g.mg_updated_at
    from mega_generations d
    left join mega_generations g on g.mg_id = 'generation:' || d.mg_generation_id
    where d.mg_record_type = 'credit_transaction'
      and starts_with(d.mg_id, 'credit_transaction:fingertips:draw:')
      and d.mg_created_at < now() - make_interval(secs => $1::float8)
      and not exists (select 1 from mega_generations r
                      where r.mg_id = 'credit_transaction:fingertips:refund:' || d.mg_generation_id)
      and (g.mg_id is null or g.mg_mma_status is null or not (g.mg_mma_status = any($2::text[])))
)
select c.gid as generation_id, c.mg_pass_id as pass_id, c.mg_mma_status as status, c.mg_created_at as charged_at,
       p.progress_at
from candidates c
cross join lateral (
    select greatest(c.mg_updated_at, max(s.mg_updated_at)) as progress_at
    from mega_generations s
    where s.mg_generation_id = c.gid and s.mg_record_type = 'mma_step'
) p
where coalesce(p.progress_at, c.mg_created_at) < now() - make_interval(secs => $1::float8)
order by c.mg_created_at limit $3
"""
TERMINAL = ["suggested", "done", "error", "cancelled"]

GET_POOL = "select mg_credits, mg_expires_at, mg_fingertips_pool from mega_customers where mg_pass_id = $1"


def amount(value: Decimal | float | int | None) -> float:
    """A pool amount as the bus carries it: a float of two decimals."""
    return round(float(value or 0), 2)


def cents(value: float) -> Decimal:
    """A cost as Postgres takes it: exact hundredths (0.1 is not a binary float)."""
    return Decimal(str(round(value, 2)))


async def on_pool_draw(req: PoolDraw, deps: LedgerDeps) -> PoolDrawn:
    async with deps.pool.acquire() as conn:
        row = await conn.fetchrow(POOL_DRAW, req.pass_id, req.generation_id, cents(req.cost), req.model_key)
    assert row is not None  # the function returns exactly one row
    outcome = PoolOutcome(row["outcome"])
    pool_after = amount(row["pool"])
    if outcome is PoolOutcome.DUPLICATE:  # the first draw's facts, so a redelivery reports the same charge
        pool_after = amount(amount(row["pool_before"]) + row["matchas_deducted"] - req.cost)
    log.info("ledger.pool_drawn", pass_id=req.pass_id, generation_id=req.generation_id, cost=req.cost,
             outcome=outcome.value, pool=amount(row["pool"]), balance=row["credits"],
             matchas_deducted=row["matchas_deducted"])
    return PoolDrawn(outcome=outcome, cost=req.cost, pool_before=amount(row["pool_before"]), pool_after=pool_after,
                     matchas_deducted=row["matchas_deducted"], balance=row["credits"], expires_at=row["expires_at"])


async def on_pool_refund(req: PoolRefund, deps: LedgerDeps) -> PoolRefunded:
    async with deps.pool.acquire() as conn:
        row = await conn.fetchrow(POOL_REFUND, req.generation_id)
    assert row is not None
    outcome = PoolOutcome(row["outcome"])
    log.info("ledger.pool_refunded", generation_id=req.generation_id, outcome=outcome.value,
             amount=amount(row["amount"]), pool=amount(row["pool"]))
    return PoolRefunded(outcome=outcome, amount=amount(row["amount"]), pool=amount(row["pool"]),
                        balance=row["credits"] or 0)


async def on_get_pool(req: GetPool, deps: LedgerDeps) -> PoolView:
    """An unknown pass id has an empty pool and no credits (reads never 404 on a customer)."""
    async with deps.pool.acquire() as conn:
        row = await conn.fetchrow(GET_POOL, req.pass_id)
    if row is None:
        return PoolView(pass_id=req.pass_id, pool=0.0, balance=0)
    return PoolView(pass_id=req.pass_id, pool=amount(row["mg_fingertips_pool"]),
                    balance=effective_credits(row["mg_credits"], row["mg_expires_at"]),
                    expires_at=row["mg_expires_at"])


async def on_drawn_unfinished(req: DrawnUnfinished, deps: LedgerDeps) -> ChargedList:
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(DRAWN_UNFINISHED, float(req.older_than_s), TERMINAL, max(1, int(req.limit)))
    return ChargedList(items=[
        ChargedItem(generation_id=r["generation_id"], pass_id=r["pass_id"] or "", debit=0, status=r["status"],
                    charged_at=r["charged_at"], mode="fingertips", progress_at=r["progress_at"])
        for r in rows
    ])


def fingertips_vars(msg: GenerationAccepted) -> dict[str, Any]:
    """What the generation row's variable map says of an edit from the start: tool, inputs, charge."""
    edit = msg.request.fingertips
    if edit is None:
        return {}
    charge: Mapping[str, Any] = msg.pool.model_dump() if msg.pool is not None else {}
    return {"fingertips": {"modelKey": edit.model_key, "inputs": dict(edit.inputs), "charge": dict(charge)}}


POOL_RPC_HANDLERS: dict[type[RpcRequest], Callable[[Any, LedgerDeps], Awaitable[Model]]] = {
    PoolDraw: on_pool_draw,
    PoolRefund: on_pool_refund,
    GetPool: on_get_pool,
    DrawnUnfinished: on_drawn_unfinished,
}
