"""What every gateway route needs, built once in `__main__` (or by a test) and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field

from libs.assets import AssetStore
from libs.bus import Bus
from libs.recent import RecentKeys
from libs.settings import Settings
from services.gateway.access import AccessFacts
from services.gateway.decisions import Decisions
from services.gateway.idempotency import IdempotencyStore
from services.gateway.ratelimit import RateLimiter
from services.gateway.tokens import TokenVerifier, build_verifier


@dataclass(frozen=True)
class GatewayDeps:
    settings: Settings
    bus: Bus
    store: AssetStore
    idempotency: IdempotencyStore
    limiter: RateLimiter
    sse_ping_s: float = 25.0
    decisions: Decisions = field(default_factory=Decisions)
    ensured: RecentKeys = field(default_factory=RecentKeys)
    verifier: TokenVerifier = None  # type: ignore[assignment]  # built from settings when not given
    access_facts: AccessFacts = field(default_factory=AccessFacts)

    def __post_init__(self) -> None:
        if self.verifier is None:
            object.__setattr__(self, "verifier", build_verifier(self.settings))
