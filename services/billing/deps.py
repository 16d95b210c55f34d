"""What billing handlers need, passed explicitly: no globals, easy to build in a test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from libs.bus import Bus
from libs.schemas import utcnow
from libs.settings import Settings
from services.billing.adapters.ledger import LedgerClient
from services.billing.recent import RecentPasses


@dataclass(frozen=True)
class BillingDeps:
    settings: Settings
    bus: Bus
    ledger: LedgerClient
    clock: Callable[[], datetime] = field(default=utcnow)
    welcomed: RecentPasses = field(default_factory=RecentPasses)  # welcome decided lately (welcome.py)

    @classmethod
    def build(cls, settings: Settings, bus: Bus) -> BillingDeps:
        return cls(settings=settings, bus=bus, ledger=LedgerClient(bus))
