"""Reconcile: clean on a consistent ledger, and names each planted breach."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from libs.schemas import CreditApply, MmaStatus, Reconcile, StatusChanged
from services.ledger import rpc
from services.ledger.deps import LedgerDeps
from services.ledger.handlers import EVENT_HANDLERS
from tests.conftest import ROOT
from tests.ledger.events import at, every_event

PASS = "pass:email:rec@example.com"
PUBLIC = "https://assets.example.com/"


async def consistent_ledger(deps: LedgerDeps) -> None:
    """A done generation and a failed, refunded one, with their credit rows."""
    await rpc.on_credit_apply(CreditApply(pass_id=PASS, delta=10, ref="topup:test:rec"), deps)
    await rpc.on_credit_apply(CreditApply(pass_id=PASS, delta=-1, ref="debit:generation:g-c"), deps)
    await rpc.on_credit_apply(CreditApply(pass_id=PASS, delta=-5, ref="debit:generation:b-c"), deps)
    for msg in every_event("c", PASS):
        await EVENT_HANDLERS[type(msg)](msg, deps)
    await rpc.on_credit_apply(CreditApply(pass_id=PASS, delta=5, ref="refund:generation:b-c"), deps)


async def run_cli(database_url: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMA_")}
    env.update(MMA_INFRA="external", MMA_DATABASE_URL=database_url, PYTHONPATH=str(ROOT), MMA_LOG_FORMAT="json")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.ledger", "reconcile", "--public-base", PUBLIC, cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode()


async def test_reconcile_is_clean_then_finds_planted_breaches(deps: LedgerDeps, pool: Any, database_url: str) -> None:
    """A balance changed behind the ledger's back (and other plants) are each reported."""
    await consistent_ledger(deps)
    report = await rpc.on_reconcile(Reconcile(public_base=PUBLIC), deps)
    assert report.ok, report.breaches
    assert report.totals["sum_balances"] == report.totals["sum_deltas"] == 9
    code, out = await run_cli(database_url)
    assert code == 0 and "MEGA reconcile: OK" in out

    async with pool.acquire() as conn:
        await conn.execute("update mega_customers set mg_credits = mg_credits + 5 where mg_pass_id = $1", PASS)
        await conn.execute("update mega_generations set mg_output_url = 'https://replicate.delivery/x.png' "
                           "where mg_id = 'generation:g-c'")
        await conn.execute("delete from mega_admin where mg_id = 'error:b-c'")
        await conn.execute("update mega_generations set mg_parent_id = 'generation:gone' "
                           "where mg_id = 'generation:b-c'")
        await conn.execute("update mega_generations set mg_step_no = 3, mg_id = 'mma_step:g-c:3' "
                           "where mg_id = 'mma_step:g-c:2'")
    await EVENT_HANDLERS[StatusChanged](
        StatusChanged(generation_id="s-1", pass_id=PASS, status=MmaStatus.GENERATING, at=at(0)), deps)

    report = await rpc.on_reconcile(Reconcile(public_base=PUBLIC, stuck_after_s=60), deps)
    assert not report.ok
    expected = {"balance_mismatch": 1, "provider_url": 1, "done_without_public_output": 1,
                "error_missing_planes": 1, "orphan_parent": 1, "step_gaps": 1, "stuck": 1}
    assert {k: v for k, v in report.checks.items() if v} == expected
    assert {"check": "balance_mismatch", "pass_id": PASS, "balance": 14, "sum_deltas": 9} in report.breaches

    code, out = await run_cli(database_url)
    assert code == 1 and "balance_mismatch: 1" in out


async def test_refund_rules(deps: LedgerDeps) -> None:
    """A refund without a failure, and a failed debited generation without refund, are breaches."""
    await consistent_ledger(deps)
    await rpc.on_credit_apply(CreditApply(pass_id=PASS, delta=1, ref="refund:generation:g-c"), deps)
    async with deps.pool.acquire() as conn:
        await conn.execute("delete from mega_generations where mg_id = 'credit_transaction:refund:generation:b-c'")
        await conn.execute("update mega_customers set mg_credits = mg_credits - 5 where mg_pass_id = $1", PASS)
    report = await rpc.on_reconcile(Reconcile(public_base=PUBLIC), deps)
    assert {k: v for k, v in report.checks.items() if v} == {"refund_without_failure": 1, "failed_refund_count": 1}
