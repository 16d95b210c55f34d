"""The money path: a ref applies at most once, the balance never goes below zero."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from libs.bus import Bus
from libs.schemas import (
    CreditApplied,
    CreditApply,
    CreditOutcome,
    CustomerView,
    GenerationCredits,
    GetCustomer,
)
from services.ledger.deps import LedgerDeps
from services.ledger.rpc import on_credit_apply, on_generation_credits, on_get_customer
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
