"""Fingertips money on the real bus: draws from the pool, exact under concurrency, refunded once on failure."""

from __future__ import annotations

import asyncio
import io
from typing import Any

from PIL import Image, ImageDraw

from libs.assets import build_asset_store
from libs.schemas import (
    FingertipsRequest,
    Flow,
    GenerationAccepted,
    GenerationFailed,
    GenerationRefunded,
    GenerationRejected,
    GenerationRequest,
    GenerationRequested,
    GetPool,
    PoolView,
    Reconcile,
    ReconcileReport,
    new_id,
)
from libs.settings import Settings
from services.billing.deps import BillingDeps
from services.billing.handlers import on_generation_failed, on_generation_requested
from tests.billing.support import events_of, give_credits, new_pass, next_event
from tests.helpers import wait_for

MONEY_CHECKS = ("balance_mismatch", "pool_mismatch", "negative_balance", "pool_refund_count", "multiple_debits",
                "failed_refund_count", "refund_without_failure")


def png(size: tuple[int, int], box: tuple[int, int, int, int], colour: tuple[int, int, int]) -> bytes:
    image = Image.new("RGB", size, (0, 0, 0) if colour == (255, 255, 255) else (230, 225, 215))
    ImageDraw.Draw(image).ellipse(box, fill=colour)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def images(settings: Settings) -> tuple[str, str]:
    store = build_asset_store(settings)
    image = await store.put_bytes(png((96, 64), (30, 16, 66, 48), (30, 80, 170)), folder="uploads",
                                  content_type="image/png")
    mask = await store.put_bytes(png((96, 64), (24, 10, 72, 54), (255, 255, 255)), folder="uploads",
                                 content_type="image/png")
    return image.url, mask.url


def edit(pass_id: str, model_key: str, **inputs: Any) -> GenerationRequested:
    return GenerationRequested(
        generation_id=new_id(), pass_id=pass_id, flow=Flow.FINGERTIPS, request_id=f"req-{new_id()[:8]}",
        request=GenerationRequest(fingertips=FingertipsRequest(model_key=model_key, inputs=inputs)),
    )


async def pool_of(bus: Any, pass_id: str) -> PoolView:
    return await bus.request(GetPool(pass_id=pass_id), PoolView)


async def money_is_clean(bus: Any) -> ReconcileReport:
    report = await bus.request(Reconcile(stuck_after_s=3600), ReconcileReport, timeout=30)
    assert not any(report.checks[name] for name in MONEY_CHECKS), report.breaches
    assert report.totals["sum_balances"] == report.totals["sum_deltas"]
    assert round(report.totals["sum_pools"], 2) == round(report.totals["sum_pool_deltas"], 2)
    return report


async def ledger_projected(db: Any, generation_ids: list[str]) -> None:
    """Every edit's generation row is final in the ledger (the projection is asynchronous)."""
    async def final() -> bool:
        count = await db.fetchval(
            "select count(*) from mega_generations where mg_record_type = 'generation' and mg_generation_id = any($1)"
            " and mg_mma_status in ('done', 'error')", generation_ids)
        return int(count) == len(generation_ids)

    await wait_for(final, 60, what="the edits projected final")


async def test_twenty_edits_at_once_on_three_credits(bus, services, ledger, db, settings):
    """20 erasers (0.5 each) at once on 3 credits: 6 run (3 refills), 14 refused, pool and balance exact."""
    await services.start("billing")
    await services.start("pipeline")
    pass_id = new_pass()
    await give_credits(bus, pass_id, 3)
    image, mask = await images(settings)
    commands = [edit(pass_id, "eraser", image=image, mask_image=mask) for _ in range(20)]
    await asyncio.gather(*(bus.publish(cmd) for cmd in commands))

    decisions = await asyncio.gather(*(next_event(bus, c.generation_id, {"accepted", "rejected"}, timeout=60)
                                       for c in commands))
    accepted = [d for d in decisions if isinstance(d, GenerationAccepted)]
    rejected = [d for d in decisions if isinstance(d, GenerationRejected)]
    assert len(accepted) == 6 and len(rejected) == 14
    assert {r.code for r in rejected} == {"INSUFFICIENT_CREDITS"}
    assert all(a.pool is not None and a.price == 0 for a in accepted)
    assert sum(a.pool.matchas_deducted for a in accepted if a.pool) == 3
    ends = await asyncio.gather(*(next_event(bus, a.generation_id, {"done", "failed"}, timeout=120)
                                  for a in accepted))
    assert {e.kind for e in ends} == {"done"}

    view = await pool_of(bus, pass_id)
    assert (view.balance, view.pool) == (0, 0.0)
    await ledger_projected(db, [a.generation_id for a in accepted])
    await money_is_clean(bus)
    rows = await db.fetch("select mg_ref_type, count(*) as n from mega_generations where mg_pass_id = $1 and "
                          "mg_source = 'fingertips' group by 1", pass_id)
    assert {r["mg_ref_type"]: r["n"] for r in rows} == {"fingertips_refill": 3, "fingertips_draw": 6}


async def test_a_failed_edit_refunds_its_cost_to_the_pool_once(bus, services, ledger, db, settings):
    """A failed edit: its 0.5 back to the pool (not the credit), once however often the failure comes back."""
    await services.start("billing")
    await services.start("pipeline")
    pass_id = new_pass()
    await give_credits(bus, pass_id, 1)
    cmd = edit(pass_id, "remove_bg", image=f"{settings.assets_base_url}/uploads/gone.png")
    await bus.publish(cmd)
    failed = await next_event(bus, cmd.generation_id, {"failed", "done"}, timeout=60)
    assert isinstance(failed, GenerationFailed) and failed.code == "EDIT_FAILED"
    refunded = await next_event(bus, cmd.generation_id, {"refunded"}, timeout=30)
    assert isinstance(refunded, GenerationRefunded)
    assert (refunded.amount, refunded.pool_amount) == (0, 0.2)
    assert (await pool_of(bus, pass_id)).pool == 1.0

    deps = BillingDeps.build(settings, bus)  # the refund consumer's handler, delivered the failure again
    for _ in range(3):
        await on_generation_failed(failed, deps)
    view = await pool_of(bus, pass_id)
    assert (view.balance, view.pool) == (0, 1.0)
    kinds = [r["mg_ref_type"] for r in await db.fetch(
        "select mg_ref_type from mega_generations where mg_pass_id = $1 and mg_source = 'fingertips' "
        "order by mg_created_at, mg_id", pass_id)]
    assert sorted(kinds) == ["fingertips_draw", "fingertips_refill", "fingertips_refund"]
    assert len(await events_of(bus, cmd.generation_id, "refunded")) == 1  # republished under the same msg id

    image, mask = await images(settings)  # the refunded cost is spent by the next edit, with no new refill
    again = edit(pass_id, "eraser", image=image, mask_image=mask)
    await bus.publish(again)
    decision = await next_event(bus, again.generation_id, {"accepted", "rejected"}, timeout=60)
    assert isinstance(decision, GenerationAccepted) and decision.pool is not None
    assert (decision.pool.matchas_deducted, decision.pool.pool_before, decision.pool.pool_after) == (0, 1.0, 0.5)
    await next_event(bus, again.generation_id, {"done"}, timeout=60)
    await ledger_projected(db, [cmd.generation_id, again.generation_id])
    await money_is_clean(bus)


async def test_a_redelivered_command_draws_once(bus, services, ledger, db, settings):
    """The same command handled again (a redelivery past the dedupe window) changes neither pool nor balance."""
    await services.start("billing")
    pass_id = new_pass()
    await give_credits(bus, pass_id, 2)
    image, _ = await images(settings)
    cmd = edit(pass_id, "upscale", image=image)
    await bus.publish(cmd)
    first = await next_event(bus, cmd.generation_id, {"accepted"}, timeout=30)
    assert isinstance(first, GenerationAccepted) and first.pool is not None
    deps = BillingDeps.build(settings, bus)
    await on_generation_requested(cmd, deps)
    await on_generation_requested(cmd, deps)
    view = await pool_of(bus, pass_id)
    assert (view.balance, view.pool) == (1, 0.9)
    accepted = await events_of(bus, cmd.generation_id, "accepted")
    assert len(accepted) == 1  # the same msg id: JetStream kept one


async def test_an_unknown_tool_is_refused_with_nothing_drawn(bus, services, ledger, db):
    """A model key the catalogue does not know is rejected before any draw."""
    await services.start("billing")
    pass_id = new_pass()
    await give_credits(bus, pass_id, 2)
    cmd = edit(pass_id, "sharpen", image="https://example.com/a.png")
    await bus.publish(cmd)
    rejected = await next_event(bus, cmd.generation_id, {"accepted", "rejected"}, timeout=30)
    assert isinstance(rejected, GenerationRejected) and rejected.code == "UNKNOWN_FINGERTIPS_MODEL"
    view = await pool_of(bus, pass_id)
    assert (view.balance, view.pool) == (2, 0.0)


async def test_an_edit_whose_job_never_runs_is_swept_and_refunded_to_the_pool(bus, services, ledger, db, settings):
    """With no pipeline, a drawn edit never runs: the sweeper fails it STUCK_TIMEOUT, its cost goes back once."""
    await services.start("billing", stuck_after_s=1, sweep_interval_s=0.3, sweep_cancel_wait_s=0.5)
    pass_id = new_pass()
    await give_credits(bus, pass_id, 1)
    image, mask = await images(settings)
    cmd = edit(pass_id, "eraser", image=image, mask_image=mask)
    await bus.publish(cmd)
    assert isinstance(await next_event(bus, cmd.generation_id, {"accepted", "rejected"}), GenerationAccepted)
    failed = await next_event(bus, cmd.generation_id, {"failed"}, timeout=30)
    assert isinstance(failed, GenerationFailed) and failed.code == "STUCK_TIMEOUT"
    refunded = await next_event(bus, cmd.generation_id, {"refunded"}, timeout=30)
    assert isinstance(refunded, GenerationRefunded) and refunded.pool_amount == 0.5
    view = await pool_of(bus, pass_id)
    assert (view.balance, view.pool) == (0, 1.0)
    await ledger_projected(db, [cmd.generation_id])
    await money_is_clean(bus)
