"""What billing handlers need, passed explicitly: no globals, easy to build in a test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from libs.bus import Bus
from libs.recent import RecentKeys
from libs.schemas import utcnow
from libs.settings import Settings
from services.billing.adapters.ledger import LedgerClient
from services.billing.adapters.protocols import DraftOrders
from services.billing.adapters.shopify_admin import ShopifyAdmin


@dataclass(frozen=True)
class BillingDeps:
    settings: Settings
    bus: Bus
    ledger: LedgerClient
    shopify: DraftOrders  # the shop's draft orders (checkout.py); billing does not start without one
    clock: Callable[[], datetime] = field(default=utcnow)
    welcomed: RecentKeys = field(default_factory=lambda: RecentKeys(ttl_s=600.0))  # welcome decided lately (welcome.py)

    @classmethod
    def build(cls, settings: Settings, bus: Bus) -> BillingDeps:
        return cls(settings=settings, bus=bus, ledger=LedgerClient(bus), shopify=ShopifyAdmin.from_settings(settings))
