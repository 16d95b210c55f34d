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
from collections.abc import Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import structlog
import uvloop

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
            from libs.health import health_server  # uvicorn and Starlette only for a service that serves one

            stack.push_async_callback(await health_server(ctx, settings.health_port))
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
