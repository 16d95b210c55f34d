"""The stuck sweeper: a charged generation that never ends is failed, and so refunded.

Postgres is the source of truth for money: the sweeper asks the ledger which
generations were debited, have no terminal status and no refund, and are older than
`stuck_after_s`. A job lost by the bus or a crash with no redelivery therefore cannot
keep a customer's credit. It publishes a normal `failed` event, so the refund takes
the usual path; two billing instances sweeping at once are safe because the event's
msg id (`failed:<gen>`) dedupes and the refund ref applies once.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from libs.errors import MmaError
from libs.schemas import ChargedItem, GenerationFailed, MmaStatus
from services.billing.deps import BillingDeps

log = structlog.get_logger("billing")

STUCK_CODE = "STUCK_TIMEOUT"
STUCK_MESSAGE = "This generation took too long and was stopped. Your credits were refunded."
FIRST_SWEEP_MAX_DELAY_S = 2.0


def stuck_failure(item: ChargedItem, stuck_after_s: float) -> GenerationFailed:
    """The `failed` event of a stuck generation, with the ops-plane detail of MMA.md."""
    return GenerationFailed(
        generation_id=item.generation_id, pass_id=item.pass_id, code=STUCK_CODE, message=STUCK_MESSAGE,
        status=MmaStatus.ERROR,
        detail={
            "emoji": "⏱️", "level": "error", "category": "TIMEOUT", "error_code": STUCK_CODE,
            "message": STUCK_MESSAGE, "generation_id": item.generation_id, "pass_id": item.pass_id,
            "step_type": None, "last_status": item.status, "debit": item.debit,
            "charged_at": item.charged_at.isoformat() if item.charged_at else None,
            "stuck_after_s": stuck_after_s, "source": "billing.sweeper",
        },
    )


async def sweep_once(deps: BillingDeps) -> int:
    """Fail every stuck charged generation; returns how many were failed."""
    stuck_after_s = deps.settings.stuck_after_s
    charged = await deps.ledger.charged_unfinished(older_than_s=stuck_after_s)
    for item in charged.items:
        await deps.bus.publish(stuck_failure(item, stuck_after_s))
        log.warning("billing.generation_swept", generation_id=item.generation_id, pass_id=item.pass_id,
                    debit=item.debit, last_status=item.status, code=STUCK_CODE)
    return len(charged.items)


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
