"""Wiring: `create_app(deps)` builds the FastAPI app with its middleware, error handlers and routes."""

from __future__ import annotations

from fastapi import Depends, FastAPI

from services.gateway import errors
from services.gateway.access import edge
from services.gateway.deps import GatewayDeps
from services.gateway.middleware import GatewayMiddleware
from services.gateway.routes import admin, billing, core, legacy_generate, mma, ops, ops_console, pages, uploads


def create_app(deps: GatewayDeps) -> FastAPI:
    app = FastAPI(
        title="Mina Mind gateway",
        version="1.0.0",
        description="MMA and legacy routes of the Mina frontend (ROUTES.md), SSE, uploads and webhooks.",
        dependencies=[Depends(edge)],  # the identity rule, before any route's own dependencies
    )
    app.state.deps = deps
    errors.install(app)
    for router in (mma.router, core.router, legacy_generate.router, admin.router, billing.router, uploads.router,
                   ops.router, ops_console.router, pages.router):
        app.include_router(router)
    app.add_middleware(GatewayMiddleware, settings=deps.settings)
    return app
