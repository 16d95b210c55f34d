"""How every service process starts and stops: settings, logging, bus, health, signals.

`run_service("billing", setup)` builds Settings, configures logging, finds NATS
(external URL, or the embedded stack's `infra.json`), connects, ensures the streams,
calls `setup(ctx)` to register consumers and RPC handlers, logs `service.ready`,
then waits for SIGTERM/SIGINT and shuts down gracefully: consumers stop fetching
and finish the message in hand, then the connection drains.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import structlog
import uvicorn
import uvloop
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from libs import startup
from libs.bus import Bus
from libs.errors import ConfigError
from libs.logging import configure_logging
from libs.settings import Settings

log = structlog.get_logger("service")

ReadyCheck = Callable[[], Awaitable[bool]]


@dataclass
class ServiceContext:
    name: str
    settings: Settings
    bus: Bus
    stack: AsyncExitStack
    database_url: str | None
    ready_checks: list[ReadyCheck] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


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


class _InLoopServer(uvicorn.Server):
    """uvicorn as one task of the service loop: SIGTERM/SIGINT stay the service's (`serve` below)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _health_server(ctx: ServiceContext, port: int) -> Callable[[], Awaitable[None]]:
    """Listening once this returns (a port in use raises here); the result stops it."""
    host = "0.0.0.0" if ctx.settings.gateway_host == "0.0.0.0" else "127.0.0.1"
    sock = socket.create_server((host, port))
    server = _InLoopServer(uvicorn.Config(health_app(ctx), log_config=None, access_log=False, lifespan="off",
                                          timeout_graceful_shutdown=5))
    task = asyncio.create_task(server.serve(sockets=[sock]), name="health")

    async def stop() -> None:
        server.should_exit = True
        await asyncio.wait({task}, timeout=10)
        sock.close()

    return stop


async def serve(name: str, setup: Callable[[ServiceContext], Awaitable[None]], settings: Settings) -> None:
    nats_url, database_url = startup.resolve_urls(settings)
    loop = asyncio.get_running_loop()
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    async with AsyncExitStack() as stack:
        bus = await Bus.connect(settings, nats_url, name=name)
        stack.push_async_callback(bus.close)
        await bus.ensure_streams()
        ctx = ServiceContext(name, settings, bus, stack, database_url, stopping=stopping)
        await setup(ctx)
        # Everything built so far (modules, app, clients) lives as long as the process: keep
        # it out of the garbage collector's full passes, which otherwise walk it every time.
        gc.freeze()
        if settings.health_port:
            stack.push_async_callback(await _health_server(ctx, settings.health_port))
        log.info("service.ready", nats_url=nats_url, health_port=settings.health_port or None)
        await stopping.wait()
        log.info("service.stopping")
    log.info("service.stopped")


def run_service(name: str, setup: Callable[[ServiceContext], Awaitable[None]]) -> None:
    """Entry point of `python -m services.<name>`."""
    startup.imported()
    settings = Settings()
    configure_logging(settings, name)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            run_loop(serve(name, setup, settings), settings)
    except ConfigError as exc:  # a setting the service cannot run without: say which, no traceback
        log.error("service.config_error", code=exc.instance_code, error=exc.message)
        raise SystemExit(2) from None


def run_loop(main: Coroutine[object, object, None], settings: Settings) -> None:
    """Run `main` on the configured loop: uvloop by default (a C event loop; a socket write, a
    timer or a future costs a fraction of the stdlib's, and every service is I/O-bound)."""
    if settings.event_loop == "uvloop":
        uvloop.run(main)
    else:
        asyncio.run(main)
