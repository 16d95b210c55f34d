"""The stuck sweeper: a charged generation that never runs is failed and refunded exactly once."""

from __future__ import annotations

from libs.schemas import ChargedList, ChargedUnfinished, GenerationAccepted, GenerationDone, GenerationFailed
from tests.billing.support import balance_of, command, credit_rows, events_of, give_credits, new_pass, next_event
from tests.helpers import wait_for


def sweeps(proc) -> int:
    return sum(1 for e in proc.log_lines() if e.get("event") == "billing.sweep_done")


async def test_a_charged_generation_with_no_run_is_swept_and_refunded_once_by_two_billings(
    bus, services, ledger, db
):
    """With no pipeline, the debited job never runs: STUCK_TIMEOUT, one refund, even with two billings."""
    fast = {"stuck_after_s": 1, "sweep_interval_s": 0.3}
    billings = [await services.start("billing", **fast), await services.start("billing", **fast)]
    pass_id = new_pass()
    await give_credits(bus, pass_id, 3)
    cmd = command(pass_id, "still_create")
    await bus.publish(cmd)
    assert isinstance(await next_event(bus, cmd.generation_id, {"accepted", "rejected"}), GenerationAccepted)

    failed = await next_event(bus, cmd.generation_id, {"failed"}, timeout=20)
    assert isinstance(failed, GenerationFailed)
    assert failed.code == "STUCK_TIMEOUT"
    assert failed.detail["category"] == "TIMEOUT" and failed.detail["emoji"] == "⏱️"
    await next_event(bus, cmd.generation_id, {"refunded"}, timeout=20)

    async def nothing_left() -> bool:
        listing = await bus.request(ChargedUnfinished(older_than_s=0), ChargedList)
        return all(item.generation_id != cmd.generation_id for item in listing.items)

    await wait_for(nothing_left, 20, what="the generation to leave the charged-unfinished list")
    seen = [sweeps(p) for p in billings]
    await wait_for(lambda: all(sweeps(p) >= n + 2 for p, n in zip(billings, seen, strict=True)), 20,
                   what="two more sweeps by each billing")

    rows = [r for r in await credit_rows(db, pass_id) if r["mg_generation_id"] == cmd.generation_id]
    assert sorted(r["mg_delta"] for r in rows) == [-1, 1]
    assert await balance_of(db, pass_id) == 3
    assert len(await events_of(bus, cmd.generation_id, "refunded")) == 1


async def test_a_finished_generation_is_left_alone(bus, services, ledger, db):
    """A charged generation that ended `done` is never swept, so its debit stands."""
    billing = await services.start("billing", stuck_after_s=1, sweep_interval_s=0.3)
    pass_id = new_pass()
    await give_credits(bus, pass_id, 2)
    cmd = command(pass_id, "still_create")
    await bus.publish(cmd)
    assert isinstance(await next_event(bus, cmd.generation_id, {"accepted", "rejected"}), GenerationAccepted)
    await bus.publish(GenerationDone(generation_id=cmd.generation_id, pass_id=pass_id, vars={},
                                     output_url="http://assets.local/x.png"))

    async def projected_done() -> bool:
        status = await db.fetchval("select mg_mma_status from mega_generations where mg_id = $1",
                                   f"generation:{cmd.generation_id}")
        return bool(status == "done")

    await wait_for(projected_done, 10, what="the ledger to project done")
    seen = sweeps(billing)
    await wait_for(lambda: sweeps(billing) >= seen + 3, 20, what="three more sweeps")
    assert await events_of(bus, cmd.generation_id, "failed") == []
    assert [r["mg_delta"] for r in await credit_rows(db, pass_id)] == [2, -1]


async def test_the_sweeper_outlives_a_ledger_outage(bus, services):
    """With no ledger the sweep only logs and tries again; it sweeps once the ledger is up."""
    billing = await services.start("billing", sweep_interval_s=0.2)

    def logged(event: str) -> bool:
        return any(e.get("event") == event for e in billing.log_lines())

    await wait_for(lambda: logged("billing.sweep_failed"), 15, what="a failed sweep")
    await services.start("ledger")
    await wait_for(lambda: logged("billing.sweep_done"), 15, what="a sweep once the ledger is back")
    assert billing.is_running
