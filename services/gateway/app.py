"""The gateway's wiring: `setup` builds its deps and serves `create_app(deps)` with uvicorn in the service loop.

`service.ready` is logged only once uvicorn is listening, and shutdown stops uvicorn
(finishing requests in hand) before the shared subscriptions stop and the bus drains.
"""

from __future__ import annotations

import asyncio

import structlog
import uvicorn
from fastapi import Depends, FastAPI

from libs.assets import build_asset_store
from libs.errors import ServiceUnavailableError
from libs.heap import HeapKeeper
from libs.service import ServiceContext
from services.gateway import errors
from services.gateway.adapters.idempotency import IdempotencyStore
from services.gateway.adapters.supabase import jwks_url_of
from services.gateway.auth.access import edge
from services.gateway.deps import GatewayDeps
from services.gateway.fastpath import GatewayApp
from services.gateway.middleware import Cors, RequestContext, RequestGuard
from services.gateway.ratelimit import RateLimiter
from services.gateway.routes import (
    admin,
    auth,
    checkout,
    credits,
    events,
    fingertips,
    generations,
    history,
    legacy,
    ops,
    ops_console,
    pages,
    uploads,
)

log = structlog.get_logger("gateway")

ROUTERS = (generations.router, events.router, auth.router, credits.router, checkout.router, history.router,
           legacy.router, admin.router, fingertips.router, uploads.router, ops.router, ops_console.router,
           pages.router)


def create_app(deps: GatewayDeps, *, fast_path: bool = True) -> FastAPI:
    """The FastAPI app: the identity rule on every route, error shapes, routers, middleware, and the
    create routes' fast path (`services.gateway.fastpath`; `fast_path=False` only to compare the two)."""
    app = GatewayApp(
        title="Mina Mind gateway",
        version="1.0.0",
        description="MMA and legacy routes of the Mina frontend (ROUTES.md), SSE, uploads and webhooks.",
        dependencies=[Depends(edge)],  # the identity rule, before any route's own dependencies
    )
    app.state.deps = deps
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    # added innermost first: RequestContext sees every answer, CORS headers go on the guard's too
    app.add_middleware(RequestGuard, settings=deps.settings)
    app.add_middleware(Cors, settings=deps.settings)
    app.add_middleware(RequestContext)
    if fast_path:
        app.enable_fast_path(deps.settings)
    return app


async def setup(ctx: ServiceContext) -> None:
    settings = ctx.settings
    deps = GatewayDeps.build(
        settings, ctx.bus, store=build_asset_store(settings),
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
    deps.fanout.on_decision_stored = deps.decisions.settled  # a stored decision: readers need not wait for it
    await deps.fanout.start()  # one subscription for every SSE stream's live events
    ctx.stack.push_async_callback(deps.fanout.stop)  # after uvicorn stopped (callbacks run last-in first-out)
    heap = HeapKeeper("gateway")  # freezes after full collections (libs/heap.py); not in a test's own process
    heap.start()
    ctx.stack.push_async_callback(heap.stop)
    await serve(ctx, create_app(deps))


async def serve(ctx: ServiceContext, app: FastAPI) -> None:
    """uvicorn in the service loop; returns once it listens, and `ctx.stack` stops it first on shutdown."""
    settings = ctx.settings
    server = uvicorn.Server(uvicorn.Config(
        app, host=settings.gateway_host, port=settings.gateway_port, log_config=None, lifespan="on",
        access_log=False, timeout_graceful_shutdown=10,
        # idle keep-alive longer than any wait a request may do (a create waits up to decision_timeout_s), so a
        # client reusing a connection never races the server closing it (uvicorn's default is 5 s)
        timeout_keep_alive=max(75, int(settings.decision_timeout_s) + 5),
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
