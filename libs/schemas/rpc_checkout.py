"""Request/reply: billing's customer-facing money calls, a Shopify checkout and the welcome claim."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from libs.schemas.base import Model
from libs.schemas.rpc import RpcRequest


class CreateCheckout(RpcRequest):
    """A Shopify draft order for `qty` packs, carrying the pass id the paid-order webhook credits.

    `qty` is the client's number as sent (billing floors and clamps it to 1..100); `email` is
    only ever a verified token's email (the draft order is sent to it)."""

    rpc_subject: ClassVar[str] = "mma.rpc.billing.checkout.create"
    pass_id: str
    qty: float = 1.0
    email: str | None = None
    request_id: str = ""


class CheckoutCreated(Model):
    checkout_url: str  # the draft order's invoice_url: where the buyer pays
    draft_order_id: int
    variant_id: int
    quantity: int


class ClaimWelcome(RpcRequest):
    """The welcome credits a signed-in customer claims: once per pass id (`welcome:<pass_id>`)."""

    rpc_subject: ClassVar[str] = "mma.rpc.billing.welcome.claim"
    pass_id: str
    user_id: str | None = None
    email: str | None = None  # only a verified email
    request_id: str = ""


class WelcomeClaimed(Model):
    pass_id: str
    outcome: str  # applied / duplicate / ineligible / off
    credited: int = 0
    balance: int = 0
    expires_at: datetime | None = None
