"""Gateway pieces that need no stack: SSE keepalive (real bus, in-process server), identity, taste, images."""

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
from libs.errors import RateLimitedError
from libs.schemas import Flow, GenerationAccepted, ScanLine
from libs.settings import Settings
from services.gateway.app import create_app
from services.gateway.deps import GatewayDeps
from services.gateway.idempotency import IdempotencyStore, generation_id_for
from services.gateway.identity import normalize_pass_id
from services.gateway.images import sniff
from services.gateway.ratelimit import RateLimiter
from services.gateway.routes.mma import preference_delta
from tests.gateway.support import SseRead, png_bytes, read_sse
from tests.helpers import wait_for


@pytest.fixture
async def gateway(settings: Settings, bus: Bus) -> AsyncIterator[str]:
    """The gateway app on a real bus, served in this process with a fast SSE keepalive."""
    deps = GatewayDeps(settings=settings, bus=bus, store=build_asset_store(settings),
                       idempotency=await IdempotencyStore.open(bus), limiter=RateLimiter(0), sse_ping_s=0.2)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(deps), host="127.0.0.1", port=port, log_config=None))
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done()
        await asyncio.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(task, 10)


async def test_sse_sends_keepalives_and_live_lines(gateway: str, bus: Bus) -> None:
    """An open stream gets comment pings while nothing happens, and lines as they are published."""
    gid = "a" * 32
    await bus.publish(GenerationAccepted(generation_id=gid, pass_id="pass:anon:u", flow=Flow.STILL_CREATE, price=1,
                                         balance=3))
    async with httpx.AsyncClient(base_url=gateway) as client:
        seen = SseRead()
        reading = asyncio.create_task(read_sse(client, f"/mma/stream/{gid}", timeout=20, stop_after=2, into=seen))
        await wait_for(lambda: seen.comments >= 2, 10, what="two keepalives")
        await bus.publish(ScanLine(generation_id=gid, pass_id="pass:anon:u", index=0, text="Looking closely."))
        sse = await reading
    assert [e.event for e in sse.events] == ["status", "scan_line"]
    assert sse.events[1].data == {"index": 0, "text": "Looking closely."}
    assert sse.comments >= 2


async def test_errors_are_in_the_route_shape_without_a_stack(gateway: str) -> None:
    """With billing away, a create is a clean 5xx in the MMA shape, never a traceback."""
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        r = await client.post("/mma/still/create", json={"inputs": {"brief": "x"}})
        assert r.status_code in (500, 503) and r.json()["error"] == "MMA_PASSID_MW_FAILED"
        assert r.headers["x-request-id"] and r.headers["x-mina-pass-id"].startswith("pass:anon:")
        legacy = await client.post("/editorial/generate", json={})
        assert legacy.status_code == 400 and legacy.json()["error"] == "MISSING_INPUT"


def test_pass_id_forms() -> None:
    """Client pass ids are used as is; a bare legacy id is a Shopify customer; blanks are nothing."""
    assert normalize_pass_id("pass:user:1") == "pass:user:1"
    assert normalize_pass_id("4242") == "pass:shopify:4242"
    assert normalize_pass_id("anonymous") is None and normalize_pass_id(" ") is None
    assert generation_id_for("pass:anon:a", "k") == generation_id_for("pass:anon:a", "k")
    assert generation_id_for("pass:anon:a", "k") != generation_id_for("pass:anon:b", "k")


def test_preference_deltas() -> None:
    """preference_set adds hard blocks; like/download raise tag weights, dislike lowers them."""
    assert preference_delta("preference_set", {"hard_block": "motion.light_flicker"}) == (
        ["motion.light_flicker"], {})
    assert preference_delta("like", {"tags": ["a", "b"]}) == ([], {"a": 1.0, "b": 1.0})
    assert preference_delta("download", {"tags": "a"}) == ([], {"a": 1.0})
    assert preference_delta("dislike", {"tags": ["a"]}) == ([], {"a": -1.0})
    assert preference_delta("create", {"tags": ["a"]}) == ([], {})


def test_sniff_and_rate_limit() -> None:
    """Types come from bytes; the limiter refuses past its budget and says when to retry."""
    assert sniff(png_bytes()) == "image/png" and sniff(b"<svg/>") is None
    now = [0.0]
    limiter = RateLimiter(2, clock=lambda: now[0])
    limiter.check("p")
    limiter.check("p")
    with pytest.raises(RateLimitedError) as info:
        limiter.check("p")
    assert info.value.details["retry_after"] == 60
    now[0] = 61.0
    limiter.check("p")
