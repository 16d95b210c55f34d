"""Checkout: a Shopify draft order whose paid order the webhook credits to the buyer's pass id.

The pass id travels as the draft order's `mina_pass_id` note attribute, which the paid-order
webhook reads before any Shopify customer or email match (services/billing/shopify.py), so a
purchase is credited to the customer who started it, once per order id.
"""

from __future__ import annotations

import math

import structlog

from libs.errors import InvalidInputError
from libs.schemas import CheckoutCreated, CreateCheckout
from libs.settings import Settings
from services.billing.adapters.protocols import DraftOrderRequest
from services.billing.deps import BillingDeps

log = structlog.get_logger("billing")

MAX_QTY = 100


def quantity(raw: float) -> int:
    """floor(qty), clamped to 1..100 (UPSTREAM.md 2.1); a value that is not a number is refused."""
    if math.isnan(raw):
        raise InvalidInputError("qty must be a number.", code="INVALID_QTY")
    return math.floor(min(max(raw, 1.0), float(MAX_QTY)))


def line_item(qty: int, settings: Settings) -> tuple[int, int]:
    """(variant id, quantity): 100 packs are the 5000-matcha pack once, anything less MINA-50 × qty."""
    if qty >= MAX_QTY:
        return settings.matcha_5000_variant_id, 1
    return settings.matcha_variant_id, qty


async def on_create_checkout(req: CreateCheckout, deps: BillingDeps) -> CheckoutCreated:
    """One draft order per call; nothing is credited here (the paid order's webhook does that)."""
    qty = quantity(req.qty)
    variant_id, units = line_item(qty, deps.settings)
    draft = await deps.shopify.create_draft_order(DraftOrderRequest(
        variant_id=variant_id, quantity=units, pass_id=req.pass_id, email=req.email))
    log.info("billing.checkout_created", pass_id=req.pass_id, request_id=req.request_id, qty=qty,
             variant_id=variant_id, quantity=units, draft_order_id=draft.id, with_email=req.email is not None)
    return CheckoutCreated(checkout_url=draft.invoice_url, draft_order_id=draft.id, variant_id=variant_id,
                           quantity=units)
