"""Welcome credits: decided by the ledger once per pass id, asked for again when a command arrives.

A new customer's first create must not depend on the gateway's welcome call answering in that
instant (billing or the ledger restarting): the gateway goes on without it, and billing asks the
ledger for the welcome decision before the first charge of a pass id it has not seen. The ledger
makes every repeat a no-op, so asking twice costs a round trip, never a credit.

The signed-in customer's explicit claim (`POST /api/welcome-matcha/claim`) is the same grant,
`welcome:<pass_id>`: a pass id gets the automatic welcome or the claimed one, never both.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from datetime import datetime, timedelta

import structlog

from libs.metrics import CREDITS
from libs.schemas import ClaimWelcome, CreditApply, CreditOutcome, CustomerView, EnsureCustomer, WelcomeClaimed
from services.billing.deps import BillingDeps

log = structlog.get_logger("billing")


async def ensure_with_welcome(req: EnsureCustomer, deps: BillingDeps, amount: int | None = None) -> CustomerView:
    """The customer row, with the welcome credits once, only for a pass id this product created.

    The ledger decides in the transaction that ensures the row (`mega_welcome`): a pass id that
    existed before the migration (it has an opening-balance row) never gets them, at 0 credits or
    not, and `welcome:<pass_id>` makes every later try a no-op, so a read may ask freely.
    `amount` defaults to the automatic welcome (`welcome_credits`).
    """
    welcome = max(deps.settings.welcome_credits if amount is None else amount, 0)
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


def rolling_expiry(current: datetime | None, now: datetime, days: int | None) -> datetime | None:
    """max(current expiry, now + days): a grant extends the expiry, never shortens it; no days, none."""
    if not days:
        return None
    target = now + timedelta(days=days)
    return max(current, target) if current is not None else target


async def on_claim_welcome(req: ClaimWelcome, deps: BillingDeps) -> WelcomeClaimed:
    """The welcome credits a signed-in customer claims, once per pass id (`welcome:<pass_id>`).

    `applied` credits `welcome_claim_credits`; `duplicate` means this pass id had its welcome
    already (claimed, or given automatically); `ineligible` is a customer who existed before
    this product (never welcomed, MEGA.md). With `credit_expiry_days` set, a claim that credits
    also moves the expiry to max(current, now + days) through its own ref
    (`welcome_expiry:<pass_id>`), applied once.
    """
    amount = max(deps.settings.welcome_claim_credits, 0)
    view = await ensure_with_welcome(EnsureCustomer(pass_id=req.pass_id, user_id=req.user_id, email=req.email),
                                     deps, amount)
    outcome = view.welcome or "off"
    balance, expires_at = view.credits, view.expires_at
    expiry = rolling_expiry(expires_at, deps.clock(), deps.settings.credit_expiry_days)
    if outcome == CreditOutcome.APPLIED.value and expiry is not None and expiry != expires_at:
        moved = await deps.ledger.apply(CreditApply(
            pass_id=req.pass_id, delta=0, ref=f"welcome_expiry:{req.pass_id}", reason="welcome_expiry",
            source="welcome", ref_type="welcome", ref_id=req.pass_id, expires_at=expiry))
        balance, expires_at = moved.balance, moved.expires_at
    log.info("billing.welcome_claimed", pass_id=req.pass_id, outcome=outcome, amount=amount, balance=balance,
             request_id=req.request_id)
    return WelcomeClaimed(pass_id=req.pass_id, outcome=outcome, balance=balance, expires_at=expires_at,
                          credited=amount if outcome == CreditOutcome.APPLIED.value else 0)
