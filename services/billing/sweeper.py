"""The stuck sweeper: a charged generation that stopped moving is stopped, failed and refunded.

Postgres is the source of truth for money: the sweeper asks the ledger which generations
were debited, have no terminal status and no refund, and whose debit and last progress
(the generation row or one of its step rows changing) are older than their mode's window
(`stuck_after_s`, `stuck_after_video_s`: Kling is slow); and which fingertips edits drew from
the pool and stopped the same way (`stuck_after_s`). A job lost by the bus or a crash with no
redelivery therefore cannot keep a customer's credit, nor an edit's share of the pool.

Each candidate is skipped while it waits for a customer slot (it is in line, not stuck) or
once the stream holds its end (the ledger has not projected it yet). Otherwise the run is
cancelled first, through the ordinary cancel path (`CancelRequested`, requested by the
sweeper): the pipeline running it interrupts the step, cancels the provider prediction and
ends it `error STUCK_TIMEOUT`, refunded. Only when no run ends it within
`sweep_cancel_wait_s` (nobody runs it) does the sweeper publish that failure itself. Either
way the first end in the stream is final (libs/final.py): a `done` that wins the race stays
done and is not refunded. Two billing instances sweeping at once are safe: the events' msg
ids (`cancel_requested:<gen>`, `failed:<gen>`) dedupe and the refund ref applies once.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

import structlog
from nats.aio.msg import Msg

from libs.errors import MmaError
from libs.final import END_KINDS, STUCK_CODE, STUCK_MESSAGE, SWEEPER, final_event
from libs.metrics import SWEPT
from libs.schemas import CancelRequested, ChargedItem, GenerationFailed, MmaStatus
from libs.waiting import is_waiting_for_slot
from services.billing.deps import BillingDeps

log = structlog.get_logger("billing")

FIRST_SWEEP_MAX_DELAY_S = 2.0
SWEEP_CONCURRENCY = 16


def window_of(item: ChargedItem, deps: BillingDeps) -> float:
    settings = deps.settings
    return settings.stuck_after_video_s if item.mode == "video" else settings.stuck_after_s


def stuck_failure(item: ChargedItem, stuck_after_s: float) -> GenerationFailed:
    """The `failed` event of a stuck generation, with the ops-plane detail of MMA.md."""
    return GenerationFailed(
        generation_id=item.generation_id, pass_id=item.pass_id, code=STUCK_CODE, message=STUCK_MESSAGE,
        status=MmaStatus.ERROR,
        detail={
            "emoji": "⏱️", "level": "error", "category": "TIMEOUT", "error_code": STUCK_CODE,
            "message": STUCK_MESSAGE, "generation_id": item.generation_id, "pass_id": item.pass_id,
            "step_type": None, "last_status": item.status, "debit": item.debit,
            "charged_at": _iso(item.charged_at), "progress_at": _iso(item.progress_at),
            "stuck_after_s": stuck_after_s, "source": "billing.sweeper", "run_cancelled": False,
        },
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def cancel_run(deps: BillingDeps, item: ChargedItem) -> bool:
    """Ask the run to stop (the cancel path) and wait up to `sweep_cancel_wait_s` for its end.

    The live subscription is opened before the cancel is published and the stream read after,
    so an end published at any moment is seen.
    """
    ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def on_event(raw: Msg) -> None:
        if raw.subject.rsplit(".", 1)[-1] in END_KINDS and not ended.done():
            ended.set_result(None)

    sub = await deps.bus.nc.subscribe(f"mma.evt.{item.generation_id}.*", cb=on_event)
    try:
        await deps.bus.publish(CancelRequested(generation_id=item.generation_id, pass_id=item.pass_id,
                                               requested_by=SWEEPER, request_id="billing.sweeper"))
        if await final_event(deps.bus, item.generation_id) is not None:
            return True
        try:
            async with asyncio.timeout(deps.settings.sweep_cancel_wait_s):
                await ended
        except TimeoutError:
            return False
        return True
    finally:
        await sub.unsubscribe()


async def sweep_item(deps: BillingDeps, item: ChargedItem) -> str:
    """What the sweep did with one candidate: waiting / ended / run_cancelled / failed."""
    bound = log.bind(generation_id=item.generation_id, pass_id=item.pass_id, last_status=item.status, mode=item.mode)
    if await is_waiting_for_slot(deps.bus.js, deps.settings, item.pass_id, item.generation_id):
        bound.info("billing.sweep_skipped", reason="waiting_for_slot")
        return "waiting"
    if await final_event(deps.bus, item.generation_id) is not None:
        bound.info("billing.sweep_skipped", reason="ended")
        return "ended"
    window = window_of(item, deps)
    if await cancel_run(deps, item):
        outcome = "run_cancelled"
    else:
        await deps.bus.publish(stuck_failure(item, window))
        outcome = "failed"
    SWEPT.labels(outcome=outcome).inc()
    bound.warning("billing.generation_swept", debit=item.debit, code=STUCK_CODE, outcome=outcome,
                  stuck_after_s=window)
    return outcome


async def sweep_once(deps: BillingDeps) -> int:
    """Sweep every stuck charged generation (a few at once); returns how many were stopped."""
    settings = deps.settings
    charged, drawn = await asyncio.gather(
        deps.ledger.charged_unfinished(older_than_s=settings.stuck_after_s,
                                       video_older_than_s=settings.stuck_after_video_s),
        deps.ledger.drawn_unfinished(older_than_s=settings.stuck_after_s))  # fingertips edits: paid from the pool
    gate = asyncio.Semaphore(SWEEP_CONCURRENCY)

    async def one(item: ChargedItem) -> str:
        async with gate:
            return await sweep_item(deps, item)

    outcomes = await asyncio.gather(*(one(item) for item in [*charged.items, *drawn.items]))
    return sum(1 for outcome in outcomes if outcome in ("run_cancelled", "failed"))


async def run_sweeper(deps: BillingDeps) -> None:
    """Sweep soon after start, then every `sweep_interval_s`, until cancelled.

    A ledger or bus outage only skips a tick: the next one finds the same generations.
    """
    interval = max(deps.settings.sweep_interval_s, 0.05)
    await asyncio.sleep(min(interval, FIRST_SWEEP_MAX_DELAY_S))
    while True:
        started = time.perf_counter()
        try:
            swept = await sweep_once(deps)
        except MmaError as exc:
            log.warning("billing.sweep_failed", error=exc.message, code=exc.instance_code, retryable=exc.retryable)
        else:
            emit = log.info if swept else log.debug
            emit("billing.sweep_done", swept=swept, duration_ms=round((time.perf_counter() - started) * 1000, 2))
        await asyncio.sleep(interval)
