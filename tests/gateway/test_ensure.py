"""The gateway's customer ensure (`ensure_customer_once`) against the real billing and ledger."""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.msg import Msg

from libs.assets import build_asset_store
from libs.bus import Bus
from libs.schemas import EnsureWelcome
from libs.settings import Settings
from services.gateway.adapters.idempotency import IdempotencyStore
from services.gateway.auth.identity import Identity
from services.gateway.deps import GatewayDeps
from services.gateway.ratelimit import RateLimiter
from services.gateway.routes.common import ensure_customer_once
from tests.conftest import Services


async def test_a_new_customers_requests_at_once_ensure_it_once(services: Services, settings: Settings, bus: Bus,
                                                               db: Any) -> None:
    """A new customer's first page sends several requests at once: one ensure goes through billing and
    the ledger for all of them (not one each), the welcome lands once, and a later request sends none."""
    for name in ("ledger", "billing"):
        await services.start(name, welcome_credits=20)
    deps = GatewayDeps.build(settings, bus, store=build_asset_store(settings),
                             idempotency=await IdempotencyStore.open(bus), limiter=RateLimiter(0))
    sent: list[bytes] = []

    async def seen(msg: Msg) -> None:
        sent.append(msg.data)

    watch = await bus.nc.subscribe(EnsureWelcome.rpc_subject, cb=seen)  # beside billing's queue group: sees each
    try:
        pass_id = "pass:anon:first-page"
        who = Identity(pass_id=pass_id, source="body")
        await asyncio.gather(*(ensure_customer_once(deps, who) for _ in range(6)))
        await ensure_customer_once(deps, who)
        await bus.nc.flush()
        assert len(sent) == 1 and pass_id.encode() in sent[0]
        assert pass_id in deps.ensured and not deps.ensuring
        row = await db.fetchrow("select mg_credits from mega_customers where mg_pass_id = $1", pass_id)
        assert row is not None and row["mg_credits"] == 20
    finally:
        await watch.unsubscribe()
        await deps.verifier.aclose()
