"""Hypothesis properties on a real database: the credit apply and status monotonicity."""

from __future__ import annotations

import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libs.schemas import (
    STATUS_ORDER,
    CreditApply,
    CreditOutcome,
    GenerationDone,
    GenerationFailed,
    MmaStatus,
    StatusChanged,
)
from services.ledger.deps import LedgerDeps
from services.ledger.handlers import EVENT_HANDLERS
from services.ledger.rpc import on_credit_apply

PROPERTY = settings(max_examples=40, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# one operation: (kind, amount, ref number) — refs repeat on purpose (redeliveries)
OPS = st.lists(st.tuples(st.sampled_from(["debit", "refund", "topup"]), st.integers(1, 7), st.integers(0, 5)),
               min_size=1, max_size=25)


@PROPERTY
@given(ops=OPS)
async def test_any_interleaving_keeps_balance_equal_to_the_sum_and_never_negative(
        deps: LedgerDeps, pool: Any, ops: list[tuple[str, int, int]]) -> None:
    """Debits, refunds and top-ups in any order, refs re-applied: balance = sum(deltas) >= 0, one row per ref."""
    pass_id = f"pass:anon:prop-{uuid.uuid4().hex[:10]}"
    expected, applied_refs = 0, set()
    for kind, amount, n in ops:
        delta = -amount if kind == "debit" else amount
        ref = {"debit": f"debit:generation:g{n}", "refund": f"refund:generation:g{n}",
               "topup": f"topup:test:{n}"}[kind]
        result = await on_credit_apply(CreditApply(pass_id=pass_id, delta=delta, ref=ref), deps)
        if result.outcome is CreditOutcome.APPLIED:
            assert ref not in applied_refs
            applied_refs.add(ref)
            expected += delta
        elif result.outcome is CreditOutcome.INSUFFICIENT:
            assert expected + delta < 0
        assert result.balance == expected >= 0
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "select c.mg_credits as balance, coalesce(sum(g.mg_delta), 0) as total, count(g.mg_id) as n "
            "from mega_customers c left join mega_generations g on g.mg_pass_id = c.mg_pass_id "
            "and g.mg_record_type = 'credit_transaction' where c.mg_pass_id = $1 group by c.mg_credits", pass_id)
    if row is not None:
        assert row["balance"] == row["total"] == expected >= 0 and row["n"] == len(applied_refs)


STATUS_EVENTS = st.lists(st.sampled_from([*[s for s in MmaStatus if not s.is_terminal], "done", "failed"]),
                         min_size=1, max_size=12)


@PROPERTY
@given(events=STATUS_EVENTS)
async def test_any_order_of_status_events_leaves_the_latest_ranked_status(
        deps: LedgerDeps, pool: Any, events: list[Any]) -> None:
    """StatusChanged/Done/Failed projected in any order: the row shows the highest-ranked status seen up to
    the first end (done or error), and that first end stays: nothing after it replaces it."""
    gid = uuid.uuid4().hex
    pass_id = "pass:anon:prop-status"
    best: MmaStatus | None = None
    for event in events:
        if event == "done":
            msg: Any = GenerationDone(generation_id=gid, pass_id=pass_id, vars={}, output_url="https://a/o.png")
            status = MmaStatus.DONE
        elif event == "failed":
            msg = GenerationFailed(generation_id=gid, pass_id=pass_id, code="X_FAILED", message="boom",
                                   step_type="seedream_generate")
            status = MmaStatus.ERROR
        else:
            msg = StatusChanged(generation_id=gid, pass_id=pass_id, status=event)
            status = event
        await EVENT_HANDLERS[type(msg)](msg, deps)
        if best is None or (not best.is_terminal and STATUS_ORDER.index(status) > STATUS_ORDER.index(best)):
            best = MmaStatus(status)
    async with pool.acquire() as conn:
        got = await conn.fetchval("select mg_mma_status from mega_generations where mg_id = $1", f"generation:{gid}")
    assert got == best.value
