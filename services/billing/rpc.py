"""Billing's request/reply answers: welcome credits, Shopify top-ups, admin adjustments, prices.

Every credit change goes through the ledger's credit apply with a ref that takes
effect at most once, so a retried call, a replayed webhook or two racing callers
never credit twice.
"""

from __future__ import annotations

from datetime import timedelta

import structlog

from libs.errors import InvalidInputError
from libs.metrics import CREDITS
from libs.schemas import (
    AdjustResult,
    AdminAdjust,
    CreditApply,
    CreditOutcome,
    CustomerView,
    EnsureCustomer,
    EnsureWelcome,
    PriceList,
    Prices,
    ShopifyOrder,
    ShopifyOrderResult,
)
from services.billing.deps import BillingDeps
from services.billing.shopify import decode_body, parse_order, verify_hmac
from services.billing.welcome import ensure_with_welcome

log = structlog.get_logger("billing")


async def on_ensure_welcome(req: EnsureWelcome, deps: BillingDeps) -> CustomerView:
    return await ensure_with_welcome(EnsureCustomer(
        pass_id=req.pass_id, shopify_customer_id=req.shopify_customer_id, user_id=req.user_id, email=req.email,
    ), deps)


async def on_shopify_order(req: ShopifyOrder, deps: BillingDeps) -> ShopifyOrderResult:
    """Credit a paid order once per order id (`topup:shopify:<order>`), only with a valid HMAC."""
    raw = decode_body(req.raw_body_b64)
    secret = deps.settings.shopify_webhook_secret
    verify_hmac(raw, req.hmac_header, secret.get_secret_value() if secret else None)
    order = parse_order(raw, deps.settings.credit_product_map)
    bound = log.bind(order_id=order.order_id, pass_id=order.pass_id, request_id=req.request_id)
    if order.credits <= 0:
        bound.info("billing.topup_skipped", reason="NO_MATCHING_PRODUCT")
        return ShopifyOrderResult(order_id=order.order_id, credited=0, reason="NO_MATCHING_PRODUCT",
                                  pass_id=order.pass_id)
    if order.pass_id is None:
        bound.warning("billing.topup_skipped", reason="NO_CUSTOMER", credits=order.credits)
        return ShopifyOrderResult(order_id=order.order_id, credited=0, reason="NO_CUSTOMER")
    await ensure_with_welcome(EnsureCustomer(
        pass_id=order.pass_id, shopify_customer_id=order.shopify_customer_id, email=order.email,
    ), deps)
    days = deps.settings.credit_expiry_days
    expires_at = deps.clock() + timedelta(days=days) if days else None
    applied = await deps.ledger.apply(CreditApply(
        pass_id=order.pass_id, delta=order.credits, ref=f"topup:shopify:{order.order_id}", reason="shopify_topup",
        source="shopify", ref_type="shopify_order", ref_id=order.order_id, expires_at=expires_at,
    ))
    CREDITS.labels(kind="topup", outcome=applied.outcome.value).inc()
    if applied.outcome is CreditOutcome.DUPLICATE:
        bound.info("billing.topup_duplicate", balance=applied.balance)
        return ShopifyOrderResult(order_id=order.order_id, already_processed=True, pass_id=order.pass_id,
                                  balance=applied.balance, expires_at=applied.expires_at)
    bound.info("billing.topup_applied", credits=order.credits, balance=applied.balance)
    return ShopifyOrderResult(order_id=order.order_id, credited=order.credits, pass_id=order.pass_id,
                              balance=applied.balance, expires_at=applied.expires_at or expires_at)


def admin_ref(req: AdminAdjust) -> tuple[str, str]:
    """(credit ref, ref id): from the client's Idempotency-Key when it sent one, so a retry of the
    same change (a lost answer, a 503) is the same ref and credits once; else from the request id."""
    if req.idempotency_key:
        return f"admin:{req.pass_id}:{req.idempotency_key}", req.idempotency_key
    return f"admin:{req.request_id}", req.request_id


async def on_admin_adjust(req: AdminAdjust, deps: BillingDeps) -> AdjustResult:
    """An admin credit change with its `admin_audit` row, in the ledger's one transaction.

    A repeat of an applied change answers the first result (the balances its audit row
    recorded); the same key with another delta is IDEMPOTENCY_CONFLICT (the ledger checks)."""
    if req.delta == 0:
        raise InvalidInputError("delta must be a non-zero integer.", code="INVALID_AMOUNT")
    await deps.ledger.ensure_customer(EnsureCustomer(pass_id=req.pass_id))
    ref, ref_id = admin_ref(req)
    applied = await deps.ledger.apply(CreditApply(
        pass_id=req.pass_id, delta=req.delta, ref=ref, reason=req.reason, source="admin",
        ref_type="admin", ref_id=ref_id,
        audit={"actor": req.actor, "reason": req.reason, "delta": req.delta, "pass_id": req.pass_id,
               "request_id": req.request_id, "idempotency_key": req.idempotency_key},
    ))
    CREDITS.labels(kind="admin", outcome=applied.outcome.value).inc()
    if applied.outcome is CreditOutcome.INSUFFICIENT:
        raise InvalidInputError(
            f"This adjustment would take the balance below 0 (balance {applied.balance}).",
            code="INVALID_AMOUNT", balance=applied.balance, delta=req.delta,
        )
    log.info("billing.admin_adjusted", pass_id=req.pass_id, delta=req.delta, actor=req.actor,
             outcome=applied.outcome.value, balance=applied.balance, request_id=req.request_id)
    after = applied.balance
    if applied.outcome is CreditOutcome.DUPLICATE and applied.first_balance is not None:
        after = applied.first_balance
    return AdjustResult(pass_id=req.pass_id, credits_before=after - applied.delta, credits_after=after,
                        expires_at=applied.expires_at, outcome=applied.outcome)


async def on_price_list(_req: PriceList, deps: BillingDeps) -> Prices:
    s = deps.settings
    return Prices(still_create=s.price_still_create, still_tweak=s.price_still_tweak,
                  video_animate=s.price_video_animate, video_tweak=s.price_video_tweak)
