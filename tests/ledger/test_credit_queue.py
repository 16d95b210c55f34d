"""Group commit of single credit applies (services/ledger/credit_queue.py): same outcomes as one by one."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from libs.schemas import CreditApply, CreditOutcome
from services.ledger.credits import on_credit_apply
from services.ledger.deps import LedgerDeps
from tests.ledger.test_credits import balance_and_sum

PASS = "pass:anon:queue-1"


async def test_concurrent_applies_share_batches_and_decide_as_alone(deps: LedgerDeps, pool: Any) -> None:
    """A top-up and 40 debits of 1 against 25 credits, all at once: 25 applied, 15 insufficient."""
    await on_credit_apply(CreditApply(pass_id=PASS, delta=25, ref="topup:test:q"), deps)
    results = await asyncio.gather(*(on_credit_apply(
        CreditApply(pass_id=PASS, delta=-1, ref=f"debit:generation:q{i}"), deps) for i in range(40)))
    outcomes = [r.outcome for r in results]
    assert outcomes.count(CreditOutcome.APPLIED) == 25
    assert outcomes.count(CreditOutcome.INSUFFICIENT) == 15
    assert await balance_and_sum(pool, PASS) == (0, 0, 26)


async def test_a_bad_item_fails_alone(deps: LedgerDeps, pool: Any) -> None:
    """Postgres refuses one item's text (NUL): the batch is re-run item by item, only that one fails."""
    good = [CreditApply(pass_id=PASS, delta=2, ref=f"topup:test:g{i}") for i in range(5)]
    bad = CreditApply(pass_id=PASS, delta=2, ref="topup:test:bad\x00")
    results = await asyncio.gather(*(on_credit_apply(r, deps) for r in [*good[:2], bad, *good[2:]]),
                                   return_exceptions=True)
    assert isinstance(results[2], Exception)
    applied = [r for i, r in enumerate(results) if i != 2]
    assert all(not isinstance(r, BaseException) and r.outcome is CreditOutcome.APPLIED for r in applied)
    assert await balance_and_sum(pool, PASS) == (10, 10, 5)


@pytest.mark.parametrize("lanes", [1, 3])
async def test_the_same_ref_applies_once_across_lanes(deps: LedgerDeps, pool: Any, lanes: int) -> None:
    deps.credit_queue.lanes = lanes
    req = CreditApply(pass_id=PASS, delta=7, ref="topup:test:once")
    results = await asyncio.gather(*(on_credit_apply(req, deps) for _ in range(30)))
    assert [r.outcome for r in results].count(CreditOutcome.APPLIED) == 1
    assert await balance_and_sum(pool, PASS) == (7, 7, 1)
