"""The money path: a ref applies at most once, the balance never goes below zero."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from libs.bus import Bus
from libs.errors import InvalidInputError
from libs.schemas import (
    CreditApplied,
    CreditApply,
    CreditApplyBatch,
    CreditOutcome,
    CustomerView,
    GenerationCredits,
    GetCustomer,
)
from services.ledger.deps import LedgerDeps
from services.ledger.rpc import on_credit_apply, on_credit_apply_batch, on_generation_credits, on_get_customer
from tests.conftest import Services

PASS = "pass:shopify:777"


async def balance_and_sum(pool: Any, pass_id: str) -> tuple[int, int, int]:
    async with pool.acquire() as conn:
        balance = await conn.fetchval("select mg_credits from mega_customers where mg_pass_id = $1", pass_id)
        total, rows = await conn.fetchrow(
            "select coalesce(sum(mg_delta), 0), count(*) from mega_generations "
            "where mg_record_type = 'credit_transaction' and mg_pass_id = $1", pass_id)
    return balance, total, rows


async def test_200_concurrent_debits_through_the_service(services: Services, bus: Bus, pool: Any) -> None:
    """50 credits, 200 concurrent debits of 1: exactly 50 applied, 150 insufficient, balance 0."""
    await services.start("ledger")
    topup = await bus.request(CreditApply(pass_id=PASS, delta=50, ref="topup:test:1"), CreditApplied)
    assert (topup.outcome, topup.balance) == (CreditOutcome.APPLIED, 50)

    async def debit(i: int) -> CreditApplied:
        return await bus.request(
            CreditApply(pass_id=PASS, delta=-1, ref=f"debit:generation:c{i}"), CreditApplied, timeout=30)

    results = await asyncio.gather(*(debit(i) for i in range(200)))
    outcomes = [r.outcome for r in results]
    assert outcomes.count(CreditOutcome.APPLIED) == 50
    assert outcomes.count(CreditOutcome.INSUFFICIENT) == 150
    assert all(r.balance >= 0 for r in results)
    balance, total, rows = await balance_and_sum(pool, PASS)
    assert (balance, total, rows) == (0, 0, 51)
    view = await bus.request(GetCustomer(pass_id=PASS), CustomerView)
    assert view.credits == 0


async def test_same_ref_twice_makes_one_row(deps: LedgerDeps, pool: Any) -> None:
    """Concurrent and sequential re-applies of one ref: one row, one balance change, DUPLICATE after."""
    req = CreditApply(pass_id=PASS, delta=5, ref="topup:shopify:9001", reason="topup", source="shopify")
    results = await asyncio.gather(*(on_credit_apply(req, deps) for _ in range(10)))
    again = await on_credit_apply(req, deps)
    outcomes = [r.outcome for r in [*results, again]]
    assert outcomes.count(CreditOutcome.APPLIED) == 1
    assert outcomes.count(CreditOutcome.DUPLICATE) == 10
    assert again.balance == 5 and again.txn_id == "topup:shopify:9001"
    assert await balance_and_sum(pool, PASS) == (5, 5, 1)


async def test_insufficient_rolls_back_and_the_ref_can_apply_later(deps: LedgerDeps, pool: Any) -> None:
    """A refused debit leaves no row, so the same ref succeeds once credit arrives."""
    debit = CreditApply(pass_id=PASS, delta=-3, ref="debit:generation:g9")
    assert (await on_credit_apply(debit, deps)).outcome is CreditOutcome.INSUFFICIENT
    await on_credit_apply(CreditApply(pass_id=PASS, delta=3, ref="topup:test:2"), deps)
    applied = await on_credit_apply(debit, deps)
    assert (applied.outcome, applied.balance) == (CreditOutcome.APPLIED, 0)
    txns = await on_generation_credits(GenerationCredits(generation_id="g9"), deps)
    assert [(t.txn_id, t.delta, t.ref_type, t.ref_id) for t in txns.txns] == [
        ("debit:generation:g9", -3, "generation", "g9")]


async def test_expired_credits_read_as_zero_and_cannot_be_spent(deps: LedgerDeps, pool: Any) -> None:
    """Expired credits: balance reads 0, a debit is INSUFFICIENT, the stored sum is untouched."""
    past = datetime.now(UTC) - timedelta(days=1)
    await on_credit_apply(CreditApply(pass_id=PASS, delta=4, ref="topup:test:3", expires_at=past), deps)
    assert (await on_get_customer(GetCustomer(pass_id=PASS), deps)).credits == 0
    debit = await on_credit_apply(CreditApply(pass_id=PASS, delta=-1, ref="debit:generation:gx"), deps)
    assert (debit.outcome, debit.balance) == (CreditOutcome.INSUFFICIENT, 0)
    assert await balance_and_sum(pool, PASS) == (4, 4, 1)


async def test_audit_row_written_with_the_credit(deps: LedgerDeps, pool: Any) -> None:
    """An admin adjustment carries its audit row in the same transaction."""
    req = CreditApply(pass_id=PASS, delta=2, ref="adjust:req-1", audit={"actor": "admin", "action": "adjust"})
    await on_credit_apply(req, deps)
    await on_credit_apply(req, deps)
    async with pool.acquire() as conn:
        rows = await conn.fetch("select * from mega_admin where mg_record_type = 'admin_audit'")
    assert len(rows) == 1 and rows[0]["mg_detail"]["delta"] == 2 and rows[0]["mg_action"] == "adjust"


async def test_a_batch_decides_each_item_as_alone(deps: LedgerDeps, pool: Any) -> None:
    """One batch over three customers: in-order results, a refused debit, a repeated ref, an unknown customer."""
    await on_credit_apply(CreditApply(pass_id="pass:b:1", delta=2, ref="topup:test:b1"), deps)
    await on_credit_apply(CreditApply(pass_id="pass:b:2", delta=1, ref="topup:test:b2"), deps)
    items = [
        CreditApply(pass_id="pass:b:2", delta=-1, ref="debit:generation:b2-1"),
        CreditApply(pass_id="pass:b:1", delta=-1, ref="debit:generation:b1-1"),
        CreditApply(pass_id="pass:b:2", delta=-1, ref="debit:generation:b2-2"),  # nothing left
        CreditApply(pass_id="pass:b:1", delta=-1, ref="debit:generation:b1-1"),  # same ref again
        CreditApply(pass_id="pass:b:3", delta=-1, ref="debit:generation:b3-1"),  # never seen before
        CreditApply(pass_id="pass:b:1", delta=-1, ref="debit:generation:b1-2"),
    ]
    out = await on_credit_apply_batch(CreditApplyBatch(items=items), deps)
    assert [(r.txn_id, r.outcome, r.balance) for r in out.results] == [
        ("debit:generation:b2-1", CreditOutcome.APPLIED, 0),
        ("debit:generation:b1-1", CreditOutcome.APPLIED, 1),
        ("debit:generation:b2-2", CreditOutcome.INSUFFICIENT, 0),
        ("debit:generation:b1-1", CreditOutcome.DUPLICATE, 1),
        ("debit:generation:b3-1", CreditOutcome.INSUFFICIENT, 0),
        ("debit:generation:b1-2", CreditOutcome.APPLIED, 0),
    ]
    assert await balance_and_sum(pool, "pass:b:1") == (0, 0, 3)
    assert await balance_and_sum(pool, "pass:b:2") == (0, 0, 2)
    assert await balance_and_sum(pool, "pass:b:3") == (0, 0, 0)
    # the refused ref applies later, once there is credit
    await on_credit_apply(CreditApply(pass_id="pass:b:2", delta=1, ref="topup:test:b2-again"), deps)
    again = await on_credit_apply_batch(CreditApplyBatch(items=[items[2]]), deps)
    assert (again.results[0].outcome, again.results[0].balance) == (CreditOutcome.APPLIED, 0)


async def test_concurrent_batches_in_opposite_orders_neither_deadlock_nor_overspend(
        deps: LedgerDeps, pool: Any) -> None:
    """20 batches at once, each over the same 10 customers (half of them listed in reverse):
    no deadlock error, every customer ends at exactly 0 with one debit row per credit."""
    customers = [f"pass:dl:{i}" for i in range(10)]
    for who in customers:
        await on_credit_apply(CreditApply(pass_id=who, delta=15, ref=f"topup:test:{who}"), deps)

    def batch(n: int) -> CreditApplyBatch:
        order = customers if n % 2 else list(reversed(customers))
        return CreditApplyBatch(items=[CreditApply(pass_id=who, delta=-1, ref=f"debit:generation:{who}:{n}")
                                       for who in order])

    results = await asyncio.gather(*(on_credit_apply_batch(batch(n), deps) for n in range(20)))
    outcomes = [r.outcome for out in results for r in out.results]
    assert outcomes.count(CreditOutcome.APPLIED) == 150
    assert outcomes.count(CreditOutcome.INSUFFICIENT) == 50
    for who in customers:
        assert await balance_and_sum(pool, who) == (0, 0, 16)


async def test_an_audited_change_is_refused_in_a_batch(deps: LedgerDeps) -> None:
    """Admin changes write an audit row with the change: they must go through CreditApply alone."""
    audited = CreditApply(pass_id=PASS, delta=5, ref="admin:test:1", audit={"actor": "ops"})
    with pytest.raises(InvalidInputError):
        await on_credit_apply_batch(CreditApplyBatch(items=[audited]), deps)
