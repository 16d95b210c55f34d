"""Gateway fixtures: the real stack (ledger, billing, pipeline, gateway) and an HTTP client on it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
import uvicorn

from libs.assets import build_asset_store
from libs.bus import Bus
from libs.devinfra import free_port
from libs.settings import Settings
from services.gateway.adapters.idempotency import IdempotencyStore
from services.gateway.app import create_app
from services.gateway.deps import GatewayDeps
from services.gateway.ratelimit import RateLimiter
from tests.conftest import Services
from tests.helpers import wait_for


@pytest.fixture
async def stack(services: Services) -> Services:
    """All four services, with 20 welcome credits for every new pass id."""
    await services.start_all(welcome_credits=20)
    return services


@pytest.fixture
async def client(stack: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30.0) as http:
        yield http


@pytest.fixture
async def gateway(settings: Settings, bus: Bus) -> AsyncIterator[str]:
    """The gateway app on a real bus, served in this process with a fast SSE keepalive."""
    deps = GatewayDeps.build(settings, bus, store=build_asset_store(settings),
                             idempotency=await IdempotencyStore.open(bus), limiter=RateLimiter(0), sse_ping_s=0.2)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(deps), host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started or task.done(), 10, what="the in-test gateway to listen")
    assert server.started, task.result()
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)
    await deps.fanout.stop()
    await deps.verifier.aclose()
