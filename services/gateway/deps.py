"""What every gateway route needs, built once by `app.setup` (or by a test) and passed down: no globals."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from libs.assets import AssetStore
from libs.bus import Bus
from libs.recent import RecentKeys
from libs.schemas import CustomerView
from libs.settings import Settings
from services.gateway.adapters.billing import PriceBook
from services.gateway.adapters.decisions import Decisions
from services.gateway.adapters.fanout import Fanout
from services.gateway.adapters.idempotency import IdempotencyStore
from services.gateway.adapters.ledger import LedgerReads
from services.gateway.adapters.supabase import TokenVerifier, build_verifier
from services.gateway.auth.access import AccessFacts
from services.gateway.ratelimit import RateLimiter


@dataclass(frozen=True)
class GatewayDeps:
    settings: Settings
    bus: Bus
    store: AssetStore
    idempotency: IdempotencyStore
    limiter: RateLimiter
    verifier: TokenVerifier
    fanout: Fanout  # the one live subscription every SSE stream shares
    prices: PriceBook  # billing's prices, cached
    ledger: LedgerReads
    sse_ping_s: float = 25.0
    decisions: Decisions = field(default_factory=Decisions)  # the one subscription to billing's decisions
    ensured: RecentKeys = field(default_factory=RecentKeys)  # callers whose customer row was ensured lately
    ensuring: dict[str, asyncio.Future[CustomerView]] = field(default_factory=dict)  # ensures on their way
    access_facts: AccessFacts = field(default_factory=AccessFacts)

    @classmethod
    def build(cls, settings: Settings, bus: Bus, store: AssetStore, idempotency: IdempotencyStore,
              limiter: RateLimiter, *, sse_ping_s: float = 25.0, verifier: TokenVerifier | None = None,
              ) -> GatewayDeps:
        """Everything derived from the settings and the bus (the token verifier from settings unless given)."""
        return cls(settings=settings, bus=bus, store=store, idempotency=idempotency, limiter=limiter,
                   verifier=verifier or build_verifier(settings), fanout=Fanout(bus, tick_s=min(1.0, sse_ping_s / 2)),
                   prices=PriceBook(bus),
                   ledger=LedgerReads(bus), sse_ping_s=sse_ping_s)
