"""A non-gateway service's health server (`MMA_HEALTH_PORT`): `/healthz`, `/readyz`, `/metrics`.

Imported by libs/service.py only when a health port is set: uvicorn (with click) and Starlette
are not needed to start a service that serves none.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

if TYPE_CHECKING:
    from libs.service import ServiceContext


def health_app(ctx: ServiceContext) -> Starlette:
    """`/healthz` (alive), `/readyz` (bus + streams + own checks), `/metrics` (Prometheus)."""

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def readyz(_request: Request) -> Response:
        ready = ctx.bus.is_connected and await ctx.bus.streams_present()
        for check in ctx.ready_checks:
            ready = ready and await check()
        return JSONResponse({"ok": ready}, status_code=200 if ready else 503)

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    async def not_found(_request: Request, _exc: Exception) -> Response:
        return JSONResponse({"error": "NOT_FOUND"}, status_code=404)

    routes = [Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    return Starlette(routes=routes, exception_handlers={404: not_found})


class InLoopServer(uvicorn.Server):
    """uvicorn as one task of the service loop: SIGTERM/SIGINT stay the service's (libs/service.py `serve`)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def health_server(ctx: ServiceContext, port: int) -> Callable[[], Awaitable[None]]:
    """Listening once this returns (a port in use raises here); the result stops it."""
    host = "0.0.0.0" if ctx.settings.gateway_host == "0.0.0.0" else "127.0.0.1"
    sock = socket.create_server((host, port))
    server = InLoopServer(uvicorn.Config(health_app(ctx), log_config=None, access_log=False, lifespan="off",
                                          timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="health")

    async def stop() -> None:
        server.should_exit = True
        await asyncio.wait({task}, timeout=10)
        sock.close()

    return stop
