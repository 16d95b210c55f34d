"""Per-customer concurrency, deadlines, and a job lost from the JOBS stream."""

from __future__ import annotations

from datetime import timedelta

import httpx
import nats.js.errors

from libs.bus import Bus
from libs.schemas import (
    GenerationAccepted,
    GenerationDone,
    GenerationFailed,
    GenerationRefunded,
    MmaStatus,
    StatusChanged,
    StepRecorded,
    Stream,
    utcnow,
)
from tests.billing.support import command, give_credits, next_event
from tests.conftest import Services
from tests.control.support import create, credit_deltas, events, failed_event, new_pass
from tests.helpers import wait_for


async def test_k_running_and_three_waiting_start_in_order(services: Services, bus: Bus):
    """With K=2, five creates of one customer never run more than two at once and start in order."""
    await services.start_all(welcome_credits=10, max_running_per_customer=2, offline_latency_ms=400,
                             slot_poll_interval_s=0.05)
    pass_id = new_pass()
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30) as client:
        ids = [await create(client, pass_id) for _ in range(5)]

        async def all_done() -> bool:
            for generation_id in ids:
                if not any(isinstance(m, GenerationDone) for _s, m in await events(bus, generation_id)):
                    return False
            return True

        await wait_for(all_done, 60, interval=0.2, what="the five generations to finish")
    spans = []
    for generation_id in ids:
        seen = await events(bus, generation_id)
        start = min(s for s, m in seen if isinstance(m, StatusChanged) and m.status is not MmaStatus.QUEUED)
        end = max(s for s, m in seen if isinstance(m, GenerationDone))
        spans.append((start, end))
    starts = [start for start, _end in spans]
    assert starts == sorted(starts), "the waiting generations started out of order"
    for start, _end in spans:
        running = sum(1 for s, e in spans if s <= start < e)
        assert running <= 2, f"{running} generations of one customer ran at once"
    waited = [e for p in services.procs if p.name == "pipeline" for e in p.log_lines()
              if e.get("event") == "pipeline.slot_wait"]
    assert len(waited) >= 3


async def test_a_deadline_that_passes_while_queued_ends_deadline_exceeded_refunded_once(services: Services,
                                                                                         bus: Bus, db):
    """Accepted before its deadline, picked up after it: DEADLINE_EXCEEDED, no step ran, one refund."""
    for name in ("ledger", "billing", "gateway"):
        await services.start(name, welcome_credits=5)
    pass_id = new_pass()
    deadline = utcnow() + timedelta(seconds=1.5)
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30) as client:
        generation_id = await create(client, pass_id, deadline=deadline.isoformat())
    await wait_for(lambda: utcnow() > deadline, 10, what="the deadline to pass")
    await services.start("pipeline")
    failed = await failed_event(bus, generation_id)
    assert failed.code == "DEADLINE_EXCEEDED" and failed.status is MmaStatus.ERROR
    assert failed.detail["category"] == "TIMEOUT"

    async def refunded() -> bool:
        return sorted(await credit_deltas(db, generation_id)) == [-1, 1]

    await wait_for(refunded, 15, what="the refund")

    async def refund_announced() -> list[object] | None:
        """Billing publishes `refunded` just after the ledger applied it: wait for it, then count."""
        seen = [m for _s, m in await events(bus, generation_id)]
        return seen if any(isinstance(m, GenerationRefunded) for m in seen) else None

    seen = await wait_for(refund_announced, 15, what="the refunded event")
    assert not [m for m in seen if isinstance(m, StepRecorded)]
    assert len([m for m in seen if isinstance(m, GenerationRefunded)]) == 1


async def test_a_job_deleted_from_jobs_by_hand_is_swept_and_refunded_once_by_two_billings(
    services: Services, bus: Bus, db
):
    """The job vanishes from JOBS before any pipeline sees it: two billings sweep it, one refund."""
    await services.start("ledger")
    fast = {"stuck_after_s": 1, "sweep_interval_s": 0.3}
    await services.start("billing", **fast)
    await services.start("billing", **fast)
    pass_id = new_pass()
    await give_credits(bus, pass_id, 3)
    cmd = command(pass_id, "still_create")
    await bus.publish(cmd)
    assert isinstance(await next_event(bus, cmd.generation_id, {"accepted", "rejected"}), GenerationAccepted)

    async def job_seq() -> int:
        try:
            return int((await bus.js.get_last_msg(Stream.JOBS.value, f"mma.job.{cmd.generation_id}")).seq or 0)
        except nats.js.errors.NotFoundError:
            return 0

    seq = await wait_for(job_seq, 10, what="the job in JOBS")
    assert await bus.js.delete_msg(Stream.JOBS.value, seq)
    await services.start("pipeline")

    failed = await next_event(bus, cmd.generation_id, {"failed"}, timeout=20)
    assert isinstance(failed, GenerationFailed) and failed.code == "STUCK_TIMEOUT"

    async def refunded_once() -> bool:
        return sorted(await credit_deltas(db, cmd.generation_id)) == [-1, 1]

    await wait_for(refunded_once, 20, what="one refund")
    sweeps = [e for p in services.procs if p.name == "billing" for e in p.log_lines()
              if e.get("event") == "billing.sweep_done"]
    before = len(sweeps)
    await wait_for(lambda: len([e for p in services.procs if p.name == "billing" for e in p.log_lines()
                                if e.get("event") == "billing.sweep_done"]) >= before + 4, 20,
                   what="more sweeps by the two billings")
    assert sorted(await credit_deltas(db, cmd.generation_id)) == [-1, 1]
    assert len([m for _s, m in await events(bus, cmd.generation_id) if isinstance(m, GenerationRefunded)]) == 1
