"""Welcome credits: decided by the ledger once per pass id, asked for again when a command arrives.

A new customer's first create must not depend on the gateway's welcome call answering in that
instant (billing or the ledger restarting): the gateway goes on without it, and billing asks the
ledger for the welcome decision before the first charge of a pass id it has not seen. The ledger
makes every repeat a no-op, so asking twice costs a round trip, never a credit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

import structlog

from libs.metrics import CREDITS
from libs.schemas import CreditOutcome, CustomerView, EnsureCustomer
from services.billing.deps import BillingDeps

log = structlog.get_logger("billing")


async def ensure_with_welcome(req: EnsureCustomer, deps: BillingDeps) -> CustomerView:
    """The customer row, with the welcome credits once, only for a pass id this product created.

    The ledger decides in the transaction that ensures the row (`mega_welcome`): a pass id that
    existed before the migration (it has an opening-balance row) never gets them, at 0 credits or
    not, and `welcome:<pass_id>` makes every later try a no-op, so a read may ask freely.
    """
    welcome = max(deps.settings.welcome_credits, 0)
    view = await deps.ledger.ensure_customer(req.model_copy(update={"welcome_credits": welcome}))
    if view.welcome is not None:
        CREDITS.labels(kind="welcome", outcome=view.welcome).inc()
        deps.welcomed.add(req.pass_id)
    if view.welcome == CreditOutcome.APPLIED.value:
        log.info("billing.welcome_applied", pass_id=req.pass_id, amount=welcome, balance=view.credits)
    return view


async def welcome_before_charge(pass_ids: Iterable[str], deps: BillingDeps) -> None:
    """Before the first charge of a pass id this process has not seen: the welcome decision.

    Raises what the ledger raises (the command is redelivered), so a create is never refused
    for want of welcome credits the customer was owed.
    """
    if deps.settings.welcome_credits <= 0:
        return
    unseen = [p for p in dict.fromkeys(pass_ids) if p not in deps.welcomed]
    await asyncio.gather(*(ensure_with_welcome(EnsureCustomer(pass_id=p), deps) for p in unseen))
