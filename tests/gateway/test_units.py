"""Gateway pieces that need no stack: SSE keepalive (real bus, in-process server), identity, taste, images."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import httpx
import pytest

from libs.bus import Bus
from libs.errors import InvalidInputError, RateLimitedError
from libs.recent import RecentKeys
from libs.schemas import Flow, GenerationAccepted, GenerationDone, GenerationRejected, ScanLine
from services.gateway.adapters.decisions import Decisions
from services.gateway.adapters.fanout import Fanout
from services.gateway.adapters.idempotency import generation_id_for
from services.gateway.auth.identity import normalize_pass_id
from services.gateway.bodies import storable_problem
from services.gateway.errors import short_stack
from services.gateway.images import sniff
from services.gateway.ratelimit import RateLimiter
from services.gateway.routes.events import preference_delta
from tests.gateway.support import SseRead, png_bytes, read_sse
from tests.helpers import wait_for


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


async def test_many_streams_of_one_generation_each_get_every_line_once(gateway: str, bus: Bus) -> None:
    """200 concurrent streams, opened while lines are being published: each gets every event once, ids ascending."""
    gid = "b" * 32
    owner = "pass:anon:fan"
    streams, lines = 200, 20
    await bus.publish(GenerationAccepted(generation_id=gid, pass_id=owner, flow=Flow.STILL_CREATE, price=1, balance=3))
    limits = httpx.Limits(max_connections=streams + 10, max_keepalive_connections=streams + 10)
    async with httpx.AsyncClient(base_url=gateway, limits=limits) as client:
        readers: list[asyncio.Task[SseRead]] = []
        for index in range(lines):  # streams open in between the lines: some replay them, some get them live
            readers += [asyncio.create_task(read_sse(client, f"/mma/stream/{gid}", timeout=60))
                        for _ in range(streams // lines)]
            await bus.publish(ScanLine(generation_id=gid, pass_id=owner, index=index, text=f"line {index}"))
        await bus.publish(GenerationDone(generation_id=gid, pass_id=owner, vars={}))
        reads = await asyncio.gather(*readers)
    assert len(reads) == streams
    for sse in reads:
        assert sse.closed
        assert [e.event for e in sse.events] == ["status"] + ["scan_line"] * lines + ["done"]
        assert [e.data["index"] for e in sse.named("scan_line")] == list(range(lines))
        ids = [int(e.id or 0) for e in sse.events]
        assert ids == sorted(set(ids)) and ids[0] > 0, ids


async def test_errors_are_in_the_route_shape_without_a_stack(gateway: str) -> None:
    """With billing and the ledger away, a create still queues (the command is durable, billing decides
    the welcome credits when it arrives) and a read is a clean 5xx in the route's shape, never a traceback."""
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        r = await client.post("/mma/still/create", json={"inputs": {"brief": "x"}})
        assert r.status_code == 200 and r.json()["status"] == "queued", r.text
        pass_id = r.headers["x-mina-pass-id"]
        assert r.headers["x-request-id"] and pass_id.startswith("pass:anon:")
        read = await client.get(f"/history/pass/{pass_id}", headers={"X-Mina-Pass-Id": pass_id})
        assert read.status_code in (500, 503) and read.json()["error"], read.text
        assert "Traceback" not in read.text
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


@pytest.mark.parametrize("value", ["pass:anon:\u00e9", "pass:user:\U0001f600", "pass:anon:a\x00b", "c\U00023fd6",
                                   "pass:bench:1", "pass:anon:", "pass:anon:a b", "pass:email:" + "a" * 201])
def test_pass_ids_outside_the_mega_forms_are_refused(value: str) -> None:
    """A pass id that is not an ASCII MEGA.md form is a 400 INVALID_PASS_ID before it reaches a header or a row."""
    with pytest.raises(InvalidInputError) as info:
        normalize_pass_id(value)
    assert info.value.instance_code == "INVALID_PASS_ID"
    assert normalize_pass_id("pass:email:ana+mina@example.com") == "pass:email:ana+mina@example.com"


def test_storable_problem_finds_what_postgres_or_utf8_would_refuse() -> None:
    """NUL, lone surrogates and integers past 64 bits are found at any depth, keys included; the rest passes."""
    assert storable_problem({"a": ["x", {"b": "ok \U0001f9f4 \u202e"}], "n": 2**63 - 1, "t": True}) is None
    assert storable_problem({"a": [{"b": "x\x00"}]}) == "text must not contain NUL characters"
    assert storable_problem({"k\x00": 1}) == "text must not contain NUL characters"
    assert storable_problem(["\ud800"]) == "text must be valid Unicode (no lone surrogates)"
    assert storable_problem({"meta": {"n": -(2**63) - 1}}) == "integers must fit in 64 bits"


async def test_bad_input_is_a_400_in_the_route_shape(gateway: str) -> None:
    """Odd pass ids, NUL in the URL and unstorable bodies answer 400 in the route's shape, never 500."""
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        mma = await client.post("/mma/still/create", json={"passId": "pass:anon:\U0001f600", "inputs": {}})
        assert mma.status_code == 400 and mma.json()["error"] == "INVALID_PASS_ID" and "ok" not in mma.json()
        history = await client.get("/history/pass/c\U00023fd6\u00eb")
        assert history.status_code == 400 and history.json()["ok"] is False
        assert history.json()["error"] == "INVALID_PASS_ID" and "x-mina-pass-id" not in history.headers
        nul = await client.get("/mma/generations/abc%00def")
        assert nul.status_code == 400 and nul.json()["error"] == "INVALID_INPUT" and "ok" not in nul.json()
        query = await client.get("/history", params={"customerId": "pass:anon:a\x00"})
        assert query.status_code == 400 and query.json()["ok"] is False
        body = await client.post("/sessions/start", content=b'{"title": "a\\u0000b"}',
                                 headers={"Content-Type": "application/json"})
        assert body.status_code == 400 and body.json()["ok"] is False and "NUL" in body.json()["message"]
        lone = await client.post("/feedback/like", content=b'{"prompt": "\\ud800"}',
                                 headers={"Content-Type": "application/json"})
        assert lone.status_code == 400 and lone.json()["ok"] is False
        put = await client.put("/api/r2/put/x.png", params={"expires": 1, "content_type": "image/png",
                                                             "sig": "\U000210c7"})
        assert put.status_code == 403 and put.json()["error"] == "INVALID_SIGNATURE"
        crash = await client.post("/api/log-error", json={"passId": "pass:anon:\u00e9", "message": "boom"})
        assert crash.status_code == 200 and crash.json()["ok"] is True


async def test_decisions_resolve_the_waiting_create_from_the_broadcast(bus: Bus) -> None:
    """One subscription resolves each registered generation's future with its accept or reject, nothing else."""
    decisions = Decisions()
    await decisions.start(bus)
    await decisions.start(bus)  # idempotent: still one subscription per subject
    accepted, rejected = decisions.expect("b" * 32), decisions.expect("c" * 32)
    await bus.publish(GenerationAccepted(generation_id="b" * 32, pass_id="pass:anon:u", flow=Flow.STILL_CREATE,
                                         price=1, balance=3))
    await bus.publish(GenerationRejected(generation_id="c" * 32, pass_id="pass:anon:u", flow=Flow.STILL_CREATE,
                                         code="INSUFFICIENT_CREDITS", message="no", price=1, balance=0))
    got = await asyncio.wait_for(accepted, 10)
    refused = await asyncio.wait_for(rejected, 10)
    decisions.forget("b" * 32, accepted)
    decisions.forget("c" * 32, rejected)
    assert isinstance(got, GenerationAccepted) and got.balance == 3
    assert isinstance(refused, GenerationRejected) and refused.code == "INSUFFICIENT_CREDITS"
    assert decisions.pending == 0


def test_ensured_passes_are_bounded_and_expire() -> None:
    """Entries leave after the TTL, and the longest-ensured leave first past the capacity."""
    now = [0.0]
    ensured = RecentKeys(capacity=2, ttl_s=300.0, clock=lambda: now[0])
    ensured.add("pass:anon:a")
    ensured.add("pass:anon:b")
    now[0] = 10.0
    ensured.add("pass:anon:a")  # ensured again: its age restarts
    ensured.add("pass:anon:c")  # evicts b, now the oldest
    assert "pass:anon:b" not in ensured and "pass:anon:a" in ensured and len(ensured) == 2
    now[0] = 310.0
    assert "pass:anon:a" not in ensured and "pass:anon:c" not in ensured


def test_short_stack_keeps_the_innermost_frames_without_source() -> None:
    """The unexpected-exception log carries file:line of the last frames only."""
    def dive(n: int) -> None:
        if n == 0:
            raise ValueError("deep")
        dive(n - 1)

    with pytest.raises(ValueError) as info:
        dive(20)
    stack = short_stack(info.value)
    assert len(stack) == 8 and all(" in dive" in line for line in stack)


def test_the_fanout_forgets_an_ended_generation_once_its_time_is_up() -> None:
    """Kept raw events of an ended generation go `KEPT_AFTER_END_S` after its end, not before; one that
    has not ended stays."""

    class Raw:
        def __init__(self) -> None:
            self.headers = {"Mina-Type": "x"}
            self.data = b"{}"

    fanout = Fanout(cast(Any, None))
    fanout._keep("g-ended", "accepted", 1, cast(Any, Raw()))
    fanout._keep("g-running", "accepted", 2, cast(Any, Raw()))
    fanout._keep("g-ended", "done", 3, cast(Any, Raw()))
    ends = fanout._kept["g-ended"].ended_at
    fanout._forget_ended(ends - 1)
    assert set(fanout._kept) == {"g-ended", "g-running"}
    fanout._forget_ended(ends)
    assert set(fanout._kept) == {"g-running"}
