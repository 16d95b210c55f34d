"""Request/reply: versioned config, and billing's calls (welcome, Shopify orders, admin adjusts, prices)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from libs.schemas.base import Model, new_id
from libs.schemas.rpc import CreditOutcome, RpcRequest

# ---- ledger: versioned config


class ConfigEntry(Model):
    key: str
    version: int
    id: str  # app_config:<key>.v<N>
    value: dict[str, Any]


class GetActiveConfig(RpcRequest):
    """The highest enabled version of each key (missing keys are absent)."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.config.active"
    keys: list[str] = Field(default_factory=list)  # empty = every key


class ConfigMap(Model):
    entries: dict[str, ConfigEntry]


class SeedConfig(RpcRequest):
    """Insert v1 fallbacks that do not exist yet (never overwrites a version)."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.config.seed"
    entries: dict[str, dict[str, Any]]


class AddConfigVersion(RpcRequest):
    """Insert version N+1 of a key (immutable rows) and an admin_audit row."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.config.add"
    key: str
    value: dict[str, Any]
    actor: str = "admin"


# ---- billing


class EnsureWelcome(RpcRequest):
    """Ensure the customer row; a new pass id gets the welcome credits once."""

    rpc_subject: ClassVar[str] = "mma.rpc.billing.welcome"
    pass_id: str
    shopify_customer_id: str | None = None
    user_id: str | None = None
    email: str | None = None


class ShopifyOrder(RpcRequest):
    """The raw webhook body and its HMAC header, verified by billing."""

    rpc_subject: ClassVar[str] = "mma.rpc.billing.shopify_order"
    raw_body_b64: str
    hmac_header: str | None = None
    request_id: str = ""


class ShopifyOrderResult(Model):
    order_id: str
    already_processed: bool = False
    credited: int = 0
    reason: str | None = None
    pass_id: str | None = None
    balance: int | None = None
    expires_at: datetime | None = None


class AdminAdjust(RpcRequest):
    rpc_subject: ClassVar[str] = "mma.rpc.billing.adjust"
    pass_id: str
    delta: int
    reason: str = "admin_adjust"
    actor: str = "admin"
    request_id: str = Field(default_factory=new_id)
    # the client's Idempotency-Key: the credit ref is `admin:<pass_id>:<key>`, so a retry credits once
    idempotency_key: str | None = None


class AdjustResult(Model):
    pass_id: str
    credits_before: int
    credits_after: int
    expires_at: datetime | None = None
    outcome: CreditOutcome


class PriceList(RpcRequest):
    rpc_subject: ClassVar[str] = "mma.rpc.billing.prices"


class Prices(Model):
    still_create: int
    still_tweak: int
    video_animate: int
    video_tweak: int
