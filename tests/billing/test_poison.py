"""Poison messages end: a generation whose message keeps failing is failed and refunded once, the rest go on.

The real ledger (and, for the job, the real billing and pipeline processes) run on a real NATS and
Postgres. The bugs are real too: a customer row whose preferences break the pipeline's start-of-run
read, and, for billing, a test-installed handler on a real Bus that raises after the real debit.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from libs import deadletter
from libs.bus import Bus
from libs.schemas import (
    FAILED_EVENTS,
    GENERATION_COMMANDS,
    GenerationAccepted,
    GenerationFailed,
    GenerationRequested,
    Stream,
)
from libs.settings import Settings
from services.billing.deps import BillingDeps
from services.billing.handlers import (
    on_command_exhausted,
    on_generation_failed,
    on_generation_requested,
    on_generation_requests,
)
from tests.billing.support import balance_of, command, credit_rows, events_of, give_credits, new_pass, next_event
from tests.conftest import Services
from tests.helpers import wait_for


async def refunded(db: asyncpg.Connection, pass_id: str, generation_id: str) -> bool:
    rows = await credit_rows(db, pass_id)
    return any(r["mg_generation_id"] == generation_id and r["mg_delta"] > 0 for r in rows)


async def error_detail(db: asyncpg.Connection, record_id: str) -> Any:
    detail = await db.fetchval("select mg_detail from mega_admin where mg_id = $1", record_id)
    return json.loads(detail) if detail else None


async def test_a_job_that_hits_a_bug_fails_its_generation_and_is_refunded_once(
    bus: Bus, services: Services, ledger: Any, db: asyncpg.Connection
) -> None:
    """A plain TypeError before the first step: max_deliveries tries, then failed, refunded once, kept."""
    await services.start("billing")
    await services.start("pipeline", max_deliveries=2)
    poisoned, healthy = new_pass(), new_pass()
    await give_credits(bus, poisoned, 3)
    await give_credits(bus, healthy, 3)
    # preferences the old code could have written: `settings` a list, which the run's start cannot read
    await db.execute("update mega_customers set mg_mma_preferences = '{\"settings\": [1]}' where mg_pass_id = $1",
                     poisoned)
    bad, good = command(poisoned), command(healthy)
    await bus.publish(bad)
    await bus.publish(good)

    failed = await next_event(bus, bad.generation_id, {"failed"}, timeout=60)
    assert isinstance(failed, GenerationFailed) and failed.code == "UNCAUGHT_EXCEPTION"
    done = await next_event(bus, good.generation_id, {"done", "failed"}, timeout=60)
    assert done.kind == "done"  # type: ignore[attr-defined]
    await wait_for(lambda: refunded(db, poisoned, bad.generation_id), 30, what="the refund")

    [kept] = await wait_for(lambda: deadletter.waiting(bus.js, deadletter.filter_for("pipeline")), 20,
                            what="the job kept")
    assert kept.subject == f"mma.job.{bad.generation_id}" and kept.deliveries == 2
    assert kept.reason.startswith("TypeError")
    report = await wait_for(lambda: error_detail(db, kept.record_id), 20, what="the ops-plane record")
    assert report["category"] == "POISON_MESSAGE" and report["consumer"] == "pipeline"
    assert report["generation_id"] == bad.generation_id
    await wait_for(lambda: _status(db, bad.generation_id, "error"), 20, what="the generation row failed")

    rows = [r["mg_delta"] for r in await credit_rows(db, poisoned) if r["mg_generation_id"] == bad.generation_id]
    assert sorted(rows) == [-1, 1]
    assert await balance_of(db, poisoned) == 3
    assert len(await events_of(bus, bad.generation_id, "refunded")) == 1


async def _status(db: asyncpg.Connection, generation_id: str, status: str) -> bool:
    found = await db.fetchval("select mg_mma_status from mega_generations where mg_id = $1",
                              f"generation:{generation_id}")
    return bool(found == status)


async def test_a_command_that_hits_a_bug_in_a_batch_fails_alone_and_is_refunded_once(
    bus: Bus, settings: Settings, ledger: Any, db: asyncpg.Connection
) -> None:
    """The batch falls back to one by one: the other commands are accepted; the poisoned one, already
    debited, is given up after max_deliveries, fails and is refunded once by billing's refund consumer."""
    pass_id = new_pass()
    await give_credits(bus, pass_id, 20)
    cmds = [command(pass_id) for _ in range(8)]
    poison = cmds[3].generation_id

    async def one(cmd: GenerationRequested, deps: BillingDeps) -> None:
        await on_generation_requested(cmd, deps)
        if cmd.generation_id == poison:
            raise RuntimeError("a bug after the debit")

    async def many(batch: list[GenerationRequested], deps: BillingDeps) -> None:
        await on_generation_requests(batch, deps)
        if any(cmd.generation_id == poison for cmd in batch):
            raise RuntimeError("a bug after the debits")

    deps = BillingDeps.build(settings, bus)
    for cmd in cmds:
        await bus.publish(cmd)
    await bus.consume_batch(stream=Stream.COMMANDS, durable="billing", filter_subject=GENERATION_COMMANDS,
                            handlers={GenerationRequested: one}, batch_handler=many, deps=deps, max_deliver=3,
                            retry_unavailable=True, on_exhausted=on_command_exhausted)
    await bus.consume(stream=Stream.EVENTS, durable="billing-refunds", filter_subject=FAILED_EVENTS,
                      handlers={GenerationFailed: on_generation_failed}, deps=deps, concurrency=4,
                      retry_unavailable=True)

    await wait_for(lambda: refunded(db, pass_id, poison), 40, what="the poisoned command refunded")
    for cmd in cmds:
        decision = await next_event(bus, cmd.generation_id, {"accepted", "rejected"})
        assert isinstance(decision, GenerationAccepted)
    failed = await next_event(bus, poison, {"failed"})
    assert isinstance(failed, GenerationFailed) and failed.detail["consumer"] == "billing"
    for cmd in cmds:
        assert await events_of(bus, cmd.generation_id, "failed") == ([failed] if cmd.generation_id == poison else [])

    [kept] = await deadletter.waiting(bus.js, deadletter.filter_for("billing"))
    assert kept.subject == f"mma.cmd.generation.{poison}" and kept.deliveries == 3
    assert kept.reason == "RuntimeError: a bug after the debit"
    rows = await credit_rows(db, pass_id)
    by_generation = {c.generation_id: sorted(r["mg_delta"] for r in rows if r["mg_generation_id"] == c.generation_id)
                     for c in cmds}
    assert by_generation == {cmd.generation_id: ([-1, 1] if cmd.generation_id == poison else [-1]) for cmd in cmds}
    assert await balance_of(db, pass_id) == 20 - 7
