"""`python -m services.gateway`: the HTTP surface on the bus, served by uvicorn in the service loop.

`service.ready` is logged only once uvicorn is listening, and shutdown stops uvicorn
(finishing requests in hand) before the bus drains.
"""

from __future__ import annotations

import asyncio

import structlog
import uvicorn

from libs.assets import build_asset_store
from libs.errors import ServiceUnavailableError
from libs.service import ServiceContext, run_service
from services.gateway.app import create_app
from services.gateway.deps import GatewayDeps
from services.gateway.fanout import fanout_for
from services.gateway.idempotency import IdempotencyStore
from services.gateway.ratelimit import RateLimiter
from services.gateway.tokens import jwks_url_of

log = structlog.get_logger("gateway")


async def setup(ctx: ServiceContext) -> None:
    settings = ctx.settings
    deps = GatewayDeps(
        settings=settings,
        bus=ctx.bus,
        store=build_asset_store(settings),
        idempotency=await IdempotencyStore.open(ctx.bus, replicas=settings.stream_replicas),
        limiter=RateLimiter(settings.rate_limit_per_minute),
    )
    ctx.stack.push_async_callback(deps.verifier.aclose)
    log.info("gateway.token_verification", mode=settings.token_verification, jwks=jwks_url_of(settings),
             hs256=settings.supabase_jwt_secret is not None)
    if settings.identity_relaxed:
        log.warning("gateway.identity_relaxed", detail="MMA_IDENTITY_RELAXED is on: a pass:user/email/shopify id is "
                    "honoured without its token (counted in mina_identity_relaxed_total); turn it off after the "
                    "migration window")
    await deps.decisions.start(ctx.bus)  # one subscription for every create's accept/reject
    sse_fanout = fanout_for(ctx.bus)
    await sse_fanout.start()  # one subscription for every SSE stream's live events
    ctx.stack.push_async_callback(sse_fanout.stop)  # after uvicorn stopped (callbacks run last-in first-out)
    app = create_app(deps)
    server = uvicorn.Server(uvicorn.Config(
        app, host=settings.gateway_host, port=settings.gateway_port, log_config=None, lifespan="on",
        access_log=False, timeout_graceful_shutdown=10,
    ))
    task = asyncio.create_task(server.serve(), name="uvicorn")

    async def stop() -> None:
        server.should_exit = True
        await asyncio.wait({task}, timeout=15)
        log.info("gateway.http_stopped")

    ctx.stack.push_async_callback(stop)
    while not server.started:
        if task.done():
            raise ServiceUnavailableError(f"the gateway could not listen on {settings.gateway_host}:"
                                          f"{settings.gateway_port}")
        await asyncio.sleep(0.02)
    log.info("gateway.http_listening", host=settings.gateway_host, port=settings.gateway_port)


def main() -> None:
    run_service("gateway", setup)


if __name__ == "__main__":
    main()
