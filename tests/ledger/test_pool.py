"""The fingertips pool: exact under concurrency, a refill is one whole credit, refunds once, reconcile counts it."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from libs.schemas import (
    CreditApply,
    GetPool,
    PoolDraw,
    PoolOutcome,
    PoolRefund,
    Reconcile,
)
from services.ledger import rpc
from services.ledger.deps import LedgerDeps
from services.ledger.pool import on_get_pool, on_pool_draw, on_pool_refund
from services.ledger.reconcile import run_checks

PASS = "pass:email:pool@example.com"


async def seed(deps: LedgerDeps, credits: int, pass_id: str = PASS) -> None:
    await rpc.on_credit_apply(CreditApply(pass_id=pass_id, delta=credits, ref=f"topup:test:{pass_id}"), deps)


async def books(pool: Any, pass_id: str = PASS) -> dict[str, Any]:
    """Balance, pool, and what the ledger rows add up to, read straight from Postgres."""
    async with pool.acquire() as conn:
        customer = await conn.fetchrow(
            "select mg_credits, mg_fingertips_pool from mega_customers where mg_pass_id = $1", pass_id)
        sums = await conn.fetchrow(
            "select coalesce(sum(mg_delta), 0) as deltas, coalesce(sum(mg_pool_delta), 0) as pool_deltas, "
            "count(*) filter (where mg_ref_type = 'fingertips_refill') as refills, "
            "count(*) filter (where mg_ref_type = 'fingertips_draw') as draws, "
            "count(*) filter (where mg_ref_type = 'fingertips_refund') as refunds "
            "from mega_generations where mg_record_type = 'credit_transaction' and mg_pass_id = $1", pass_id)
    return {"balance": customer["mg_credits"], "pool": float(customer["mg_fingertips_pool"]),
            "deltas": int(sums["deltas"]), "pool_deltas": float(sums["pool_deltas"]), "refills": sums["refills"],
            "draws": sums["draws"], "refunds": sums["refunds"]}


async def failed(pool: Any, *generation_ids: str) -> None:
    """The generation rows of edits that ended in error (what the projection writes on `failed`)."""
    async with pool.acquire() as conn:
        for gid in generation_ids:
            await conn.execute(
                "insert into mega_generations (mg_id, mg_record_type, mg_pass_id, mg_generation_id, mg_mma_status, "
                "mg_mma_mode, mg_error) values ('generation:' || $2, 'generation', $1, $2, 'error', 'fingertips', "
                "'Edit failed')", PASS, gid)


async def clean(pool: Any) -> None:
    async with pool.acquire() as conn:
        report = await run_checks(conn, Reconcile(stuck_after_s=3600))
    money = {k: v for k, v in report.checks.items()
             if k in ("balance_mismatch", "pool_mismatch", "negative_balance", "pool_refund_count")}
    assert not any(money.values()), report.breaches
    totals = report.totals
    assert totals["sum_balances"] + totals["sum_pools"] == pytest.approx(totals["sum_deltas"]
                                                                         + totals["sum_pool_deltas"])


async def test_first_draw_refills_with_one_credit_then_draws_from_the_pool(deps: LedgerDeps, pool: Any) -> None:
    """0.5 on an empty pool takes one whole credit in (a row with a ref); the next 0.5 takes none."""
    await seed(deps, 3)
    first = await on_pool_draw(PoolDraw(pass_id=PASS, generation_id="e1", cost=0.5, model_key="eraser"), deps)
    assert (first.outcome, first.matchas_deducted, first.pool_before, first.pool_after, first.balance) == (
        PoolOutcome.APPLIED, 1, 0.0, 0.5, 2)
    second = await on_pool_draw(PoolDraw(pass_id=PASS, generation_id="e2", cost=0.5, model_key="eraser"), deps)
    assert (second.matchas_deducted, second.pool_before, second.pool_after, second.balance) == (0, 0.5, 0.0, 2)
    third = await on_pool_draw(PoolDraw(pass_id=PASS, generation_id="u1", cost=0.1, model_key="upscale"), deps)
    assert (third.matchas_deducted, third.pool_after, third.balance) == (1, 0.9, 1)
    assert await books(pool) == {"balance": 1, "pool": 0.9, "deltas": 1, "pool_deltas": 0.9, "refills": 2,
                                 "draws": 3, "refunds": 0}
    async with pool.acquire() as conn:
        refill = await conn.fetchrow("select * from mega_generations where mg_id = $1",
                                     "credit_transaction:fingertips:refill:e1")
    assert (refill["mg_delta"], float(refill["mg_pool_delta"]), refill["mg_reason"], refill["mg_source"],
            refill["mg_generation_id"], refill["mg_meta"]["ref"]) == (
        -1, 1.0, "fingertips_pool_refill", "fingertips", "e1", "fingertips:refill:e1")
    view = await on_get_pool(GetPool(pass_id=PASS), deps)
    assert (view.pool, view.balance) == (0.9, 1)
    await clean(pool)


async def test_a_redelivered_draw_changes_nothing_and_reports_the_first(deps: LedgerDeps, pool: Any) -> None:
    """The same generation drawing again (a redelivered command) is DUPLICATE with the first draw's facts."""
    await seed(deps, 2)
    req = PoolDraw(pass_id=PASS, generation_id="d1", cost=0.2, model_key="remove_bg")
    first = await on_pool_draw(req, deps)
    again = await asyncio.gather(*(on_pool_draw(req, deps) for _ in range(5)))
    assert all(a.outcome is PoolOutcome.DUPLICATE for a in again)
    assert all((a.pool_before, a.pool_after, a.matchas_deducted) == (first.pool_before, first.pool_after, 1)
               for a in again)
    assert await books(pool) == {"balance": 1, "pool": 0.8, "deltas": 1, "pool_deltas": 0.8, "refills": 1,
                                 "draws": 1, "refunds": 0}


async def test_insufficient_when_the_pool_is_short_and_no_credit_is_left(deps: LedgerDeps, pool: Any) -> None:
    """Pool 0.1 < 0.5 and balance 0: refused, nothing written; a cost the pool covers still goes through."""
    await seed(deps, 1)
    await on_pool_draw(PoolDraw(pass_id=PASS, generation_id="a", cost=0.5), deps)
    await on_pool_draw(PoolDraw(pass_id=PASS, generation_id="b", cost=0.2), deps)
    await on_pool_draw(PoolDraw(pass_id=PASS, generation_id="c", cost=0.2), deps)
    refused = await on_pool_draw(PoolDraw(pass_id=PASS, generation_id="d", cost=0.5), deps)
    assert (refused.outcome, refused.balance, refused.pool_before) == (PoolOutcome.INSUFFICIENT, 0, 0.1)
    covered = await on_pool_draw(PoolDraw(pass_id=PASS, generation_id="e", cost=0.1), deps)
    assert (covered.outcome, covered.pool_after, covered.matchas_deducted) == (PoolOutcome.APPLIED, 0.0, 0)
    assert await books(pool) == {"balance": 0, "pool": 0.0, "deltas": 0, "pool_deltas": 0.0, "refills": 1,
                                 "draws": 4, "refunds": 0}
    unknown = await on_pool_draw(PoolDraw(pass_id="pass:anon:nobody", generation_id="z", cost=0.1), deps)
    assert unknown.outcome is PoolOutcome.INSUFFICIENT
    await clean(pool)


async def test_twenty_edits_at_once_on_three_credits_never_overdraw(deps: LedgerDeps, pool: Any) -> None:
    """20 concurrent 0.5 draws on 3 credits: exactly 6 go through (3 refills), the books are exact."""
    await seed(deps, 3)
    results = await asyncio.gather(*(
        on_pool_draw(PoolDraw(pass_id=PASS, generation_id=f"c{i}", cost=0.5, model_key="eraser"), deps)
        for i in range(20)))
    outcomes = [r.outcome for r in results]
    assert outcomes.count(PoolOutcome.APPLIED) == 6
    assert outcomes.count(PoolOutcome.INSUFFICIENT) == 14
    assert sum(r.matchas_deducted for r in results) == 3
    assert all(r.balance >= 0 and r.pool_after >= 0 for r in results)
    assert await books(pool) == {"balance": 0, "pool": 0.0, "deltas": 0, "pool_deltas": 0.0, "refills": 3,
                                 "draws": 6, "refunds": 0}
    await clean(pool)


async def test_mixed_costs_at_once_stay_exact(deps: LedgerDeps, pool: Any) -> None:
    """30 concurrent draws of 0.5, 0.2 and 0.1 on 4 credits: value in = value out, to the hundredth."""
    await seed(deps, 4)
    costs = [0.5, 0.2, 0.1] * 10
    results = await asyncio.gather(*(
        on_pool_draw(PoolDraw(pass_id=PASS, generation_id=f"m{i}", cost=cost), deps) for i, cost in enumerate(costs)))
    drawn = round(sum(cost for cost, r in zip(costs, results, strict=True) if r.outcome is PoolOutcome.APPLIED), 2)
    state = await books(pool)
    assert state["balance"] >= 0 and state["pool"] >= 0
    assert round(state["balance"] + state["pool"], 2) == round(4 - drawn, 2)
    assert state["balance"] == 4 - state["refills"]
    await clean(pool)


async def test_a_failed_edit_refunds_to_the_pool_once(deps: LedgerDeps, pool: Any) -> None:
    """The refund gives the cost back to the pool (never the refilled credit), once however often it comes."""
    await seed(deps, 1)
    await on_pool_draw(PoolDraw(pass_id=PASS, generation_id="f1", cost=0.5), deps)
    refunds = await asyncio.gather(*(on_pool_refund(PoolRefund(generation_id="f1"), deps) for _ in range(6)))
    outcomes = [r.outcome for r in refunds]
    assert outcomes.count(PoolOutcome.APPLIED) == 1 and outcomes.count(PoolOutcome.DUPLICATE) == 5
    assert all(r.amount == 0.5 for r in refunds)
    assert await books(pool) == {"balance": 0, "pool": 1.0, "deltas": 0, "pool_deltas": 1.0, "refills": 1,
                                 "draws": 1, "refunds": 1}
    none = await on_pool_refund(PoolRefund(generation_id="never-drew"), deps)
    assert (none.outcome, none.amount) == (PoolOutcome.NO_DRAW, 0.0)
    # the refunded half is spent by the next two edits without a new refill
    for gid in ("f2", "f3"):
        assert (await on_pool_draw(PoolDraw(pass_id=PASS, generation_id=gid, cost=0.5), deps)).matchas_deducted == 0
    assert (await books(pool))["pool"] == 0.0


async def test_draws_and_refunds_interleaved_at_once(deps: LedgerDeps, pool: Any) -> None:
    """Refunds racing new draws on one customer: the pool never goes negative and the books add up."""
    await seed(deps, 2)
    first = [await on_pool_draw(PoolDraw(pass_id=PASS, generation_id=f"r{i}", cost=0.5), deps) for i in range(3)]
    assert [f.outcome for f in first] == [PoolOutcome.APPLIED] * 3
    await failed(pool, "r0", "r1", "r2")
    tasks = [on_pool_refund(PoolRefund(generation_id=f"r{i}"), deps) for i in range(3)]
    tasks += [on_pool_draw(PoolDraw(pass_id=PASS, generation_id=f"n{i}", cost=0.5), deps) for i in range(6)]
    await asyncio.gather(*tasks)
    state = await books(pool)
    assert state["pool"] >= 0 and state["balance"] >= 0
    assert state["balance"] == state["deltas"] and state["pool"] == pytest.approx(state["pool_deltas"])
    assert state["refunds"] == 3
    # value: 2 credits in; 9 draws of 0.5 asked, 3 refunded
    assert round(state["balance"] + state["pool"], 2) == round(2 - 0.5 * (state["draws"] - 3), 2)
    await clean(pool)


async def test_costs_outside_hundredths_are_refused(deps: LedgerDeps) -> None:
    """The function refuses a cost the pool cannot hold exactly (a bug upstream of it, not a charge)."""
    with pytest.raises(asyncpg.InvalidParameterValueError):
        async with deps.pool.acquire() as conn:
            await conn.fetchrow("select * from mega_pool_draw($1, $2, $3::numeric, $4)", PASS, "x", "0.125", "")


async def test_reconcile_finds_a_pool_changed_behind_the_ledger(deps: LedgerDeps, pool: Any) -> None:
    """A pool written without its row, and a failed edit with no pool refund, are both reported."""
    await seed(deps, 1)
    await on_pool_draw(PoolDraw(pass_id=PASS, generation_id="p1", cost=0.5), deps)
    await failed(pool, "p1")
    async with pool.acquire() as conn:
        await conn.execute("update mega_customers set mg_fingertips_pool = 0.7 where mg_pass_id = $1", PASS)
        report = await run_checks(conn, Reconcile(stuck_after_s=3600))
    assert report.checks["pool_mismatch"] == 1
    assert report.checks["pool_refund_count"] == 1
    assert report.checks["balance_mismatch"] == 0
    assert report.checks["failed_refund_count"] == 0  # the refill is not a debit to refund as a credit


async def test_a_pool_left_by_the_old_backend_opens_once(empty_database_url: str) -> None:
    """mg_mma_preferences.fingertips_pool of the production database becomes an opening row and the column."""
    from services.ledger.migrate import apply_migrations
    from tests.ledger.test_migrations import MMA_PATCH, load_fixture, run_files_again

    old_pools = {"pass:shopify:7001": "0.7", "pass:shopify:7002": '"0.30"', "pass:email:zero@example.com": "-1"}
    await load_fixture(empty_database_url, MMA_PATCH, *(
        f"update mega_customers set mg_mma_preferences = '{{\"fingertips_pool\": {pool}}}' where mg_pass_id = '{pid}'"
        for pid, pool in old_pools.items()))
    await apply_migrations(empty_database_url)
    await run_files_again(empty_database_url)
    conn = await asyncpg.connect(empty_database_url)
    try:
        pools = {r["mg_pass_id"]: float(r["mg_fingertips_pool"]) for r in await conn.fetch(
            "select mg_pass_id, mg_fingertips_pool from mega_customers where mg_fingertips_pool <> 0")}
        assert pools == {"pass:shopify:7001": 0.7, "pass:shopify:7002": 0.3}
        opening = await conn.fetch("select mg_pass_id, mg_pool_delta, mg_delta from mega_generations "
                                   "where mg_ref_type = 'fingertips_opening' order by mg_pass_id")
        assert [(r["mg_pass_id"], float(r["mg_pool_delta"]), r["mg_delta"]) for r in opening] == [
            ("pass:shopify:7001", 0.7, 0), ("pass:shopify:7002", 0.3, 0)]
        report = await run_checks(conn, Reconcile(public_base="https://assets.example.com/", stuck_after_s=0))
        assert report.ok, report.breaches
    finally:
        await conn.close()
