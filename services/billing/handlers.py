"""The money around a generation: the debit before it runs, the refund after it fails.

Both handlers are idempotent under redelivery: the ledger applies a credit ref at
most once (`debit:generation:<id>`, `refund:generation:<id>`) and every published
message carries a deterministic msg id, so a crash between the credit apply and the
publish is repaired by the redelivery republishing the same messages.
"""

from __future__ import annotations

import time
from datetime import UTC

import structlog

from libs.final import final_event
from libs.metrics import CREDITS, GENERATIONS
from libs.schemas import (
    BusMessage,
    CreditApply,
    CreditOutcome,
    Flow,
    GenerationAccepted,
    GenerationDone,
    GenerationFailed,
    GenerationJob,
    GenerationRefunded,
    GenerationRejected,
    GenerationRequested,
    MmaStatus,
)
from services.billing.deps import BillingDeps
from services.billing.fingertips import on_fingertips_requested, refund_to_pool
from services.billing.welcome import welcome_before_charge

log = structlog.get_logger("billing")

DEADLINE_MESSAGE = "This request's deadline passed before it could start. You were not charged."
POISON_MESSAGE = "Something went wrong on our side. Any credits charged were refunded."


def insufficient_message(price: int, balance: int) -> str:
    """The sentence the frontend shows (ROUTES.md, insufficient credits)."""
    return f"Not enough Mina credits. Need {price}, you have {balance}."


def price_of(cmd: GenerationRequested, deps: BillingDeps) -> int:
    """A motion suggestion only writes text: it is free, everything else costs its flow's price."""
    if cmd.request.inputs.suggest_only:
        return 0
    return deps.settings.price_of(cmd.flow.value)


def _deadline_passed(cmd: GenerationRequested, deps: BillingDeps) -> bool:
    """A naive deadline is read as UTC, so a sloppy writer cannot make the comparison raise."""
    if cmd.deadline is None:
        return False
    deadline = cmd.deadline if cmd.deadline.tzinfo else cmd.deadline.replace(tzinfo=UTC)
    return deadline <= deps.clock()


async def _already_debited(cmd: GenerationRequested, deps: BillingDeps) -> bool:
    txns = await deps.ledger.generation_credits(cmd.generation_id)
    return any(t.delta < 0 for t in txns.txns)


def _debit(cmd: GenerationRequested, price: int) -> CreditApply:
    return CreditApply(
        pass_id=cmd.pass_id, delta=-price, ref=f"debit:generation:{cmd.generation_id}", reason=cmd.flow.value,
        source="mma", ref_type="generation", ref_id=cmd.generation_id, generation_id=cmd.generation_id,
    )


def _decided(cmd: GenerationRequested, price: int, outcome: CreditOutcome, balance: int,
             started: float) -> tuple[BusMessage, GenerationJob | None]:
    """The decision to broadcast and, when accepted, the job to hand to the pipeline."""
    if outcome is CreditOutcome.INSUFFICIENT:
        GENERATIONS.labels(flow=cmd.flow.value, status="rejected").inc()
        log.info("billing.generation_rejected", code="INSUFFICIENT_CREDITS", price=price, balance=balance,
                 flow=cmd.flow.value, generation_id=cmd.generation_id, duration_ms=_ms(started))
        return GenerationRejected(
            generation_id=cmd.generation_id, pass_id=cmd.pass_id, flow=cmd.flow,
            code="INSUFFICIENT_CREDITS", message=insufficient_message(price, balance), balance=balance, price=price,
        ), None
    log.info("billing.debit_applied", outcome=outcome.value, price=price, balance=balance, flow=cmd.flow.value,
             generation_id=cmd.generation_id, duration_ms=_ms(started))
    accepted = GenerationAccepted(
        generation_id=cmd.generation_id, pass_id=cmd.pass_id, flow=cmd.flow,
        parent_generation_id=cmd.parent_generation_id, price=price, balance=balance, request=cmd.request,
        session_id=cmd.session_id, platform=cmd.platform, request_id=cmd.request_id,
    )
    return accepted, GenerationJob(command=cmd, price=price)


async def _announce(decisions: list[tuple[BusMessage, GenerationJob | None]], deps: BillingDeps) -> None:
    """Decisions, then the jobs, in ONE pipelined write (list order is write order), their acks awaited
    together: a job no longer waits for its `accepted` to be acked before it leaves (a round trip on
    every run's start). `accepted` is written first and a run publishes nothing before its pickup
    reads, so it lands first in practice; should its publish fail while the job's succeeds, the
    command is redelivered and publishes it again (same msg id), and the ledger projects a
    generation's events in any order (`UPSERT_ACCEPTED` never moves a status back)."""
    jobs: list[BusMessage] = [job for _, job in decisions if job is not None]
    await deps.bus.publish_all([decision for decision, _ in decisions] + jobs)


async def on_generation_requested(cmd: GenerationRequested, deps: BillingDeps) -> None:
    """Charge, then hand the job over; or refuse with no charge and no job.

    A past deadline is refused before any charge, unless an earlier delivery of this
    command already charged it: then it is accepted again (the pipeline ends it with
    DEADLINE_EXCEEDED and the failure is refunded), so a charge is never orphaned.
    """
    if cmd.flow is Flow.FINGERTIPS:  # paid from the fingertips pool, not debited
        await on_fingertips_requested(cmd, deps, _deadline_passed(cmd, deps), DEADLINE_MESSAGE)
        return
    started = time.perf_counter()
    price = price_of(cmd, deps)
    if _deadline_passed(cmd, deps) and not await _already_debited(cmd, deps):
        await deps.bus.publish(GenerationRejected(
            generation_id=cmd.generation_id, pass_id=cmd.pass_id, flow=cmd.flow,
            code="DEADLINE_EXCEEDED", message=DEADLINE_MESSAGE, price=price,
        ))
        GENERATIONS.labels(flow=cmd.flow.value, status="rejected").inc()
        log.info("billing.generation_rejected", code="DEADLINE_EXCEEDED", price=price, flow=cmd.flow.value,
                 deadline=cmd.deadline.isoformat() if cmd.deadline else None)
        return

    if price == 0:
        outcome, balance = CreditOutcome.APPLIED, await deps.ledger.balance(cmd.pass_id)
    else:
        await welcome_before_charge([cmd.pass_id], deps)
        applied = await deps.ledger.apply(_debit(cmd, price))
        outcome, balance = applied.outcome, applied.balance
        CREDITS.labels(kind="debit", outcome=outcome.value).inc()
    await _announce([_decided(cmd, price, outcome, balance, started)], deps)


async def on_generation_requests(batch: list[GenerationRequested], deps: BillingDeps) -> None:
    """A batch of commands (as they queue up under load): ONE ledger transaction for all
    their debits, then their decisions and jobs published pipelined.

    Each command is decided exactly as `on_generation_requested` decides it alone; the
    rare ones (free, or past their deadline) simply go through it. A failure naks the
    whole batch and a redelivery finds each debit already applied (DUPLICATE), so it
    republishes the same messages (same msg ids) and nothing is charged twice.
    """
    started = time.perf_counter()
    charged: list[tuple[GenerationRequested, int]] = []
    for cmd in batch:
        if cmd.flow is Flow.FINGERTIPS:
            await on_generation_requested(cmd, deps)
            continue
        price = price_of(cmd, deps)
        if price == 0 or _deadline_passed(cmd, deps):
            await on_generation_requested(cmd, deps)
        else:
            charged.append((cmd, price))
    if not charged:
        return
    await welcome_before_charge([cmd.pass_id for cmd, _ in charged], deps)
    applied = await deps.ledger.apply_batch([_debit(cmd, price) for cmd, price in charged])
    decisions = []
    for (cmd, price), result in zip(charged, applied.results, strict=True):
        CREDITS.labels(kind="debit", outcome=result.outcome.value).inc()
        decisions.append(_decided(cmd, price, result.outcome, result.balance, started))
    await _announce(decisions, deps)


def cancel_refunded(evt: GenerationFailed, deps: BillingDeps) -> bool:
    """The cancel rule: before the generator call started, always refund; after it, only when
    `cancel_refund_after_provider_start` is on (by default no: the provider already charged us)."""
    if not evt.detail.get("provider_started"):
        return True
    return deps.settings.cancel_refund_after_provider_start


async def on_generation_failed(evt: GenerationFailed, deps: BillingDeps) -> None:
    """Give back exactly what was debited for this generation, once, whatever the redeliveries.

    The generation's first end decides (libs/final.py): a `failed` after `done` (a late sweep,
    a duplicate) refunds nothing, and a second failure is judged as the first one was.
    """
    started = time.perf_counter()
    final = await final_event(deps.bus, evt.generation_id)
    if isinstance(final, GenerationDone):
        CREDITS.labels(kind="refund", outcome="skipped").inc()
        log.info("billing.refund_skipped", reason="ended_done", code=evt.code, final_status=final.status.value)
        return
    evt = final or evt
    if evt.status is MmaStatus.CANCELLED:
        refund = cancel_refunded(evt, deps)
        log.info("billing.cancel_refund_decided", refund=refund,
                 provider_started=bool(evt.detail.get("provider_started")),
                 cancelled_phase=evt.detail.get("cancelled_phase"),
                 refund_after_provider_start=deps.settings.cancel_refund_after_provider_start)
        if not refund:
            CREDITS.labels(kind="refund", outcome="skipped").inc()
            return
    if await refund_to_pool(evt, deps):  # a fingertips edit: its cost goes back to the pool, never a credit
        return
    txns = await deps.ledger.generation_credits(evt.generation_id)
    debited = -sum(t.delta for t in txns.txns if t.delta < 0)
    if debited <= 0:
        CREDITS.labels(kind="refund", outcome="skipped").inc()
        log.info("billing.refund_skipped", reason="no_debit", code=evt.code)
        return
    applied = await deps.ledger.apply(CreditApply(
        pass_id=evt.pass_id, delta=debited, ref=f"refund:generation:{evt.generation_id}", reason="refund",
        source="mma", ref_type="generation", ref_id=evt.generation_id, generation_id=evt.generation_id,
    ))
    CREDITS.labels(kind="refund", outcome=applied.outcome.value).inc()
    await deps.bus.publish(GenerationRefunded(
        generation_id=evt.generation_id, pass_id=evt.pass_id, amount=debited, balance=applied.balance,
    ))
    log.info("billing.refund_applied", outcome=applied.outcome.value, amount=debited, balance=applied.balance,
             code=evt.code, duration_ms=_ms(started))


async def on_command_exhausted(cmd: GenerationRequested, exc: BaseException, deps: BillingDeps) -> None:
    """A command billing gave up on (a bug, bad data) fails its generation, so it never hangs.

    The `failed` event is what every failure publishes: the ledger records both log planes and
    billing's refund consumer gives back whatever was debited, once (`refund:generation:<id>`);
    the command itself waits in the dead-letter stream.
    """
    reason = f"{type(exc).__name__}: {exc}"[:2000]
    await deps.bus.publish(GenerationFailed(
        generation_id=cmd.generation_id, pass_id=cmd.pass_id, code="UNCAUGHT_EXCEPTION", message=POISON_MESSAGE,
        detail={"emoji": "💥", "level": "error", "category": "UNCAUGHT_EXCEPTION", "error_code": "UNCAUGHT_EXCEPTION",
                "message": reason, "request_id": cmd.request_id, "flow": cmd.flow.value, "consumer": "billing"},
    ))
    GENERATIONS.labels(flow=cmd.flow.value, status="error").inc()
    log.error("billing.command_given_up", reason=reason, flow=cmd.flow.value)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
