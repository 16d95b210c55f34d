"""The money around a fingertips edit: a draw from the pool before it runs, its cost back after a failure.

The price comes from the catalogue (libs/fingertips.py), never from the request. The ledger
draws atomically and once per generation (`fingertips:draw:<id>`, with `fingertips:refill:<id>`
when one whole credit had to move into the pool), so a redelivered command finds the draw
DUPLICATE and republishes the same decision under the same msg ids. A failed edit gives its
cost back to the pool once (`fingertips:refund:<id>`), never the refilled credit.
"""

from __future__ import annotations

import time

import structlog

from libs.fingertips import tool_for
from libs.metrics import CREDITS, GENERATIONS
from libs.schemas import (
    GenerationAccepted,
    GenerationFailed,
    GenerationJob,
    GenerationRefunded,
    GenerationRejected,
    GenerationRequested,
    PoolCharge,
    PoolDraw,
    PoolOutcome,
)
from services.billing.deps import BillingDeps
from services.billing.welcome import welcome_before_charge

log = structlog.get_logger("billing")

UNKNOWN_MODEL_MESSAGE = "UNKNOWN_FINGERTIPS_MODEL"
INSUFFICIENT_MESSAGE = "you've got {balance} matcha left. fingertips needs at least 1 matcha to refill its pool."


async def _already_drawn(cmd: GenerationRequested, deps: BillingDeps) -> bool:
    txns = await deps.ledger.generation_credits(cmd.generation_id)
    return any(t.ref_type == "fingertips_draw" for t in txns.txns)


async def on_fingertips_requested(cmd: GenerationRequested, deps: BillingDeps, deadline_passed: bool,
                                  deadline_message: str) -> None:
    """Draw, then hand the job over; or refuse with nothing drawn and no job."""
    started = time.perf_counter()
    edit = cmd.request.fingertips
    tool = tool_for(deps.settings, edit.model_key if edit else None)
    rejected: GenerationRejected | None = None
    if tool is None or edit is None:
        rejected = GenerationRejected(generation_id=cmd.generation_id, pass_id=cmd.pass_id, flow=cmd.flow,
                                      code="UNKNOWN_FINGERTIPS_MODEL", message=UNKNOWN_MODEL_MESSAGE)
    elif deadline_passed and not await _already_drawn(cmd, deps):
        rejected = GenerationRejected(generation_id=cmd.generation_id, pass_id=cmd.pass_id, flow=cmd.flow,
                                      code="DEADLINE_EXCEEDED", message=deadline_message)
    if rejected is not None or tool is None or edit is None:
        assert rejected is not None
        await deps.bus.publish(rejected)
        GENERATIONS.labels(flow=cmd.flow.value, status="rejected").inc()
        log.info("billing.generation_rejected", code=rejected.code, flow=cmd.flow.value)
        return
    await welcome_before_charge([cmd.pass_id], deps)
    drawn = await deps.ledger.pool_draw(PoolDraw(pass_id=cmd.pass_id, generation_id=cmd.generation_id,
                                                 cost=tool.cost, model_key=tool.key))
    CREDITS.labels(kind="pool_draw", outcome=drawn.outcome.value).inc()
    duration_ms = round((time.perf_counter() - started) * 1000, 2)
    if drawn.outcome is PoolOutcome.INSUFFICIENT:
        GENERATIONS.labels(flow=cmd.flow.value, status="rejected").inc()
        log.info("billing.generation_rejected", code="INSUFFICIENT_CREDITS", cost=tool.cost, pool=drawn.pool_before,
                 balance=drawn.balance, flow=cmd.flow.value, duration_ms=duration_ms)
        await deps.bus.publish(GenerationRejected(
            generation_id=cmd.generation_id, pass_id=cmd.pass_id, flow=cmd.flow, code="INSUFFICIENT_CREDITS",
            message=INSUFFICIENT_MESSAGE.format(balance=drawn.balance), balance=drawn.balance, price=1,
        ))
        return
    charge = PoolCharge(cost=drawn.cost, pool_before=drawn.pool_before, pool_after=drawn.pool_after,
                        matchas_deducted=drawn.matchas_deducted, model_key=tool.key)
    log.info("billing.pool_drawn", outcome=drawn.outcome.value, cost=tool.cost, model_key=tool.key,
             pool_before=drawn.pool_before, pool_after=drawn.pool_after, matchas_deducted=drawn.matchas_deducted,
             balance=drawn.balance, duration_ms=duration_ms)
    await deps.bus.publish(GenerationAccepted(
        generation_id=cmd.generation_id, pass_id=cmd.pass_id, flow=cmd.flow, price=0, balance=drawn.balance,
        request=cmd.request, session_id=cmd.session_id, platform=cmd.platform, request_id=cmd.request_id,
        pool=charge,
    ))
    await deps.bus.publish(GenerationJob(command=cmd, price=0))


async def refund_to_pool(evt: GenerationFailed, deps: BillingDeps) -> bool:
    """A failed edit's cost back to the pool, once; False when the generation never drew (not an edit)."""
    refunded = await deps.ledger.pool_refund(evt.generation_id)
    if refunded.outcome is PoolOutcome.NO_DRAW:
        return False
    CREDITS.labels(kind="pool_refund", outcome=refunded.outcome.value).inc()
    await deps.bus.publish(GenerationRefunded(generation_id=evt.generation_id, pass_id=evt.pass_id, amount=0,
                                              balance=refunded.balance, pool_amount=refunded.amount))
    log.info("billing.pool_refunded", outcome=refunded.outcome.value, amount=refunded.amount, pool=refunded.pool,
             code=evt.code)
    return True
