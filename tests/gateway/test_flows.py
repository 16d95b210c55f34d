"""The product's flows through HTTP only, on the real stack (ledger, billing, pipeline, gateway)."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import httpx
import nats.js.errors

from libs.bus import Bus
from libs.schemas import Stream
from tests.conftest import Services
from tests.gateway.support import ADMIN, SseRead, png_bytes, read_sse
from tests.helpers import wait_for

STILL_CREATE_ORDER = ["scan_product", "scan_logo", "scan_inspiration", "like_history", "gpt_reader",
                      "seedream_generate", "postscan_output_still"]
STILL_TWEAK_ORDER = ["gpt_feedback_still", "seedream_generate_feedback", "postscan_output_still_feedback"]
ANIMATE_ORDER = ["scan_input_still", "motion_suggestion", "gpt_reader_motion", "kling_generate",
                 "postscan_output_video"]
VIDEO_TWEAK_ORDER = ["gpt_feedback_motion", "kling_generate_feedback", "postscan_output_video_feedback"]


async def create_and_watch(client: httpx.AsyncClient, path: str, body: dict[str, Any],
                           headers: dict[str, str]) -> tuple[str, SseRead]:
    """POST a create, then read its SSE live until the stream closes."""
    r = await client.post(path, json=body, headers=headers)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["status"] == "queued" and "ok" not in out
    gid = out["generation_id"]
    # a signed-in customer's stream carries a grant (an EventSource sends no token); an anon one does not
    assert out["sse_url"].partition("?grant=")[0] == f"/mma/stream/{gid}" and out["generationId"] == gid
    sse = await read_sse(client, out["sse_url"], timeout=90)
    assert sse.closed
    return gid, sse


async def step_types(db: Any, gid: str) -> list[str]:
    rows = await db.fetch("select mg_step_type from mega_generations where mg_record_type = 'mma_step' "
                          "and mg_generation_id = $1 order by mg_step_no", gid)
    return [r["mg_step_type"] for r in rows]


def in_order(steps: list[str], canonical: list[str], required: list[str]) -> bool:
    positions = [canonical.index(s) for s in steps if s in canonical]
    return positions == sorted(positions) and all(s in steps for s in required) and all(
        s in canonical for s in steps)


async def test_scripted_happy_path(stack: Services, client: httpx.AsyncClient, db: Any) -> None:
    """Create, 3 tweaks, animate (type for me), a video tweak, like and download: 14 credits in 6 rows."""
    pass_id = "pass:anon:happy-path-1"
    h = {"X-Mina-Pass-Id": pass_id}
    upload = await client.post("/api/upload", files={"file": ("p.png", png_bytes(), "image/png")}, headers=h)
    assert upload.status_code == 200, upload.text
    product = upload.json()["publicUrl"]

    gid0, sse0 = await create_and_watch(client, "/mma/still/create", {
        "passId": pass_id, "assets": {"product_image_url": product},
        "inputs": {"brief": "a red perfume bottle on marble", "aspect_ratio": "1:1"},
    }, h)
    chain = [gid0]
    sses = [sse0]
    for i, text in enumerate(["warmer light", "more contrast", "add a shadow"]):
        gid, sse = await create_and_watch(client, f"/mma/still/{chain[-1]}/tweak", {
            "passId": pass_id, "feedback": {"still_feedback": text}}, h)
        assert gid not in chain, i
        chain.append(gid)
        sses.append(sse)
    gid_v, sse_v = await create_and_watch(client, "/mma/video/animate", {
        "passId": pass_id, "assets": {"input_still_generation_id": chain[-1]},
        "inputs": {"motion_user_brief": "", "type_for_me": True, "aspect_ratio": "9:16"},
    }, h)
    chain.append(gid_v)
    sses.append(sse_v)
    gid_vt, sse_vt = await create_and_watch(client, f"/mma/video/{gid_v}/tweak", {
        "passId": pass_id, "feedback": {"motion_feedback": "slower camera"}}, h)
    chain.append(gid_vt)
    sses.append(sse_vt)

    # SSE said something live for each generation, ending in done, with ascending ids
    for gid, sse in zip(chain, sses, strict=True):
        assert sse.named("scan_line"), gid
        assert sse.events[-1].event == "done" and sse.events[-1].data["status"] == "done", gid
        ids = [int(e.id or 0) for e in sse.events]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)

    # GET /mma/generations: outputs in the right slots
    still = (await client.get(f"/mma/generations/{chain[0]}", headers=h)).json()
    assert still["state"] == "done" and still["outputs"]["seedream_image_url"]
    video = (await client.get(f"/mma/generations/{gid_vt}", headers=h)).json()
    assert video["state"] == "done" and video["outputs"]["kling_video_url"]

    for event_type in ("like", "download"):
        r = await client.post("/mma/events", headers=h, json={
            "passId": pass_id, "generation_id": gid_v, "event_type": event_type,
            "payload": {"result_type": "motion", "url": video["outputs"]["kling_video_url"],
                        "tags": ["style.minimal", "motion.slow"]}})
        assert r.status_code == 200 and r.json()["status"] == "ok", r.text

    # ledger: 6 debits totalling 14
    async def debits() -> list[Any]:
        rows = await db.fetch("select mg_delta, mg_generation_id, mg_ref_id from mega_generations "
                              "where mg_record_type = 'credit_transaction' and mg_pass_id = $1 and mg_delta < 0",
                              pass_id)
        return rows if len(rows) >= 6 else []

    rows = await wait_for(debits, 20, what="6 debit rows")
    assert len(rows) == 6 and sum(r["mg_delta"] for r in rows) == -14
    assert {r["mg_generation_id"] for r in rows} == set(chain)
    balance = (await client.get("/credits/balance", params={"passId": pass_id}, headers=h)).json()
    assert balance["balance"] == 20 - 14

    # parent chain: each generation's parent is the previous one
    parents = {r["mg_generation_id"]: r["mg_parent_id"] for r in await db.fetch(
        "select mg_generation_id, mg_parent_id from mega_generations where mg_record_type = 'generation' "
        "and mg_pass_id = $1", pass_id)}
    assert parents[chain[0]] is None
    for previous, gid in itertools.pairwise(chain):
        assert parents[gid] == f"generation:{previous}", gid

    # step rows of each flow, in order
    assert in_order(await step_types(db, chain[0]), STILL_CREATE_ORDER,
                    ["scan_product", "like_history", "gpt_reader", "seedream_generate"])
    for gid in chain[1:4]:
        assert in_order(await step_types(db, gid), STILL_TWEAK_ORDER, STILL_TWEAK_ORDER[:2]), gid
    assert in_order(await step_types(db, gid_v), ANIMATE_ORDER, ["motion_suggestion", "kling_generate"])
    assert in_order(await step_types(db, gid_vt), VIDEO_TWEAK_ORDER, VIDEO_TWEAK_ORDER[:2])

    # events and the preference snapshot
    async def prefs() -> Any:
        row = await db.fetchrow("select mg_mma_preferences from mega_customers where mg_pass_id = $1", pass_id)
        value = row["mg_mma_preferences"] if row else None
        value = json.loads(value) if isinstance(value, str) else value
        return value if value and (value.get("tag_weights") or {}).get("motion.slow") == 2 else None

    snapshot = await wait_for(prefs, 20, what="preference snapshot")
    assert snapshot["tag_weights"]["style.minimal"] == 2
    events = await db.fetch("select mg_meta from mega_generations where mg_record_type = 'mma_event' "
                            "and mg_pass_id = $1", pass_id)
    types = sorted((json.loads(e["mg_meta"]) if isinstance(e["mg_meta"], str) else e["mg_meta"])["event_type"]
                   for e in events)
    assert types.count("like") == 1 and types.count("download") == 1


async def test_insufficient_credits_refused_before_any_work(services: Services, bus: Bus, db: Any) -> None:
    """No credit: the documented 402s (MMA and legacy), no job, no step, no provider call, no debit."""
    await services.start_all(welcome_credits=0)
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30) as client:
        pass_id = "pass:anon:poor-1"
        h = {"X-Mina-Pass-Id": pass_id}
        r = await client.post("/mma/still/create", headers=h, json={"passId": pass_id, "inputs": {"brief": "x"}})
        assert r.status_code == 402, r.text
        body = r.json()
        assert body["error"] == "INSUFFICIENT_CREDITS" and "insufficient_credits" in body["message"].lower()
        details = body["details"]
        assert details["balance"] == 0 and details["needed"] == 1 and isinstance(details["userMessage"], str)
        assert isinstance(details["costs"], dict) and isinstance(details["actions"], list)
        assert isinstance(details["canSwitchToMain"], bool) and isinstance(details["lane"], str)
        gid = body["generation_id"]

        legacy = await client.post("/editorial/generate", headers=h, json={"passId": pass_id, "brief": "x"})
        assert legacy.status_code == 402, legacy.text
        lb = legacy.json()
        assert lb["ok"] is False and lb["error"] == "INSUFFICIENT_CREDITS"
        assert lb["message"] == "Not enough Mina credits. Need 1, you have 0."
        assert lb["requiredCredits"] == 1 and lb["currentCredits"] == 0 and lb["passId"] == pass_id
        assert isinstance(lb["requestId"], str)

        video = await client.post("/motion/generate", headers=h, json={
            "passId": pass_id, "lastImageUrl": "https://example.com/a.png", "motionDescription": "spin"})
        assert video.status_code == 402 and video.json()["requiredCredits"] == 5

    assert await bus.last_seq(f"mma.evt.{gid}.rejected") > 0
    for kind in ("accepted", "status", "step", "scan_line", "done"):
        assert await bus.last_seq(f"mma.evt.{gid}.{kind}") == 0, kind
    try:
        await bus.js.get_last_msg(Stream.JOBS.value, f"mma.job.{gid}")
        raise AssertionError("a job was queued for a rejected generation")
    except nats.js.errors.NotFoundError:
        pass
    rows = await db.fetch("select mg_record_type from mega_generations where mg_pass_id = $1", pass_id)
    assert not [r for r in rows if r["mg_record_type"] in ("credit_transaction", "mma_step", "generation")]
    pipeline_log = "\n".join(p.log_text() for p in services.procs if p.name == "pipeline")
    assert gid not in pipeline_log


async def test_same_idempotency_key_ten_times_is_one_generation(stack: Services, client: httpx.AsyncClient,
                                                                db: Any) -> None:
    """Ten concurrent creates with one Idempotency-Key: one generation, one debit; a new body is a 409."""
    pass_id = "pass:anon:idem-1"
    headers = {"X-Mina-Pass-Id": pass_id, "Idempotency-Key": "key-42"}
    body = {"passId": pass_id, "inputs": {"brief": "one bottle"}}
    answers = await asyncio.gather(*(client.post("/mma/still/create", json=body, headers=headers)
                                     for _ in range(10)))
    assert all(a.status_code == 200 for a in answers), [a.text for a in answers]
    ids = {a.json()["generation_id"] for a in answers}
    assert len(ids) == 1
    gid = ids.pop()
    await read_sse(client, f"/mma/stream/{gid}", timeout=60)

    async def debit_rows() -> list[Any]:
        return await db.fetch("select mg_delta from mega_generations where mg_record_type = 'credit_transaction' "
                              "and mg_pass_id = $1 and mg_delta < 0", pass_id)

    await wait_for(debit_rows, 20, what="the debit row")
    rows = await debit_rows()
    assert [r["mg_delta"] for r in rows] == [-1]
    generations = await db.fetch("select 1 from mega_generations where mg_record_type = 'generation' "
                                 "and mg_pass_id = $1", pass_id)
    assert len(generations) == 1

    again = await client.post("/mma/still/create", json=body, headers=headers)
    assert again.status_code == 200 and again.json()["generation_id"] == gid
    conflict = await client.post("/mma/still/create", json={**body, "inputs": {"brief": "another"}},
                                 headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "IDEMPOTENCY_CONFLICT" and isinstance(conflict.json()["message"], str)
    balance = (await client.get("/credits/balance", headers={"X-Mina-Pass-Id": pass_id})).json()["balance"]
    assert balance == 19


async def test_sse_replay_and_resume(stack: Services, client: httpx.AsyncClient) -> None:
    """Without Last-Event-ID the stream replays everything; with it, it resumes without repeats."""
    h = {"X-Mina-Pass-Id": "pass:anon:sse-1"}
    gid, live = await create_and_watch(client, "/mma/still/create",
                                       {"passId": "pass:anon:sse-1", "inputs": {"brief": "a lamp"}}, h)
    replay = await read_sse(client, f"/mma/stream/{gid}")

    def stored(data: object) -> object:  # `queue` is the live place in line, not part of the stored event
        return {k: v for k, v in data.items() if k != "queue"} if isinstance(data, dict) else data

    assert [(e.event, e.id, stored(e.data)) for e in replay.events] == \
        [(e.event, e.id, stored(e.data)) for e in live.events]
    assert replay.closed

    cut = live.events[2]
    resumed = await read_sse(client, f"/mma/stream/{gid}", headers={"Last-Event-ID": str(cut.id)})
    assert [e.id for e in resumed.events] == [e.id for e in live.events[3:]]
    assert resumed.events[-1].event == "done"

    after_end = await read_sse(client, f"/mma/stream/{gid}", headers={"Last-Event-ID": str(live.events[-1].id)})
    assert after_end.events == [] and after_end.closed

    unknown = await read_sse(client, "/mma/stream/0123456789abcdef0123456789abcdef")
    assert [e.event for e in unknown.events] == ["error"] and unknown.closed
    assert unknown.events[0].data["error"] == "NOT_FOUND"


async def test_failed_tweak_parent_and_admin_reads(stack: Services, client: httpx.AsyncClient) -> None:
    """Unknown parents are 404 with the documented body; admin reads need the token."""
    h = {"X-Mina-Pass-Id": "pass:anon:adm-1"}
    r = await client.post("/mma/still/nope/tweak", headers=h, json={"feedback": {"still_feedback": "x"}})
    assert r.status_code == 404
    assert r.json()["error"] == "MMA_TWEAK_FAILED" and r.json()["message"] == "PARENT_GENERATION_NOT_FOUND"
    r = await client.post("/mma/video/nope/tweak", headers=h, json={"feedback": {"motion_feedback": "x"}})
    assert r.status_code == 404
    assert r.json() | {} and r.json()["error"] == "MMA_VIDEO_TWEAK_FAILED"

    gid, _ = await create_and_watch(client, "/mma/still/create", {"inputs": {"brief": "a cup"}}, h)
    for path in ("/mma/admin/errors", f"/mma/admin/steps/{gid}", "/admin/summary", "/admin/customers",
                 "/admin/mega/parity"):
        denied = await client.get(path)
        assert denied.status_code == 401 and denied.json()["error"] == "Unauthorized", path
        wrong = await client.get(path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401, path
    steps = (await client.get(f"/mma/admin/steps/{gid}", headers=ADMIN)).json()["steps"]
    assert [s["step_no"] for s in steps] == sorted(s["step_no"] for s in steps) and steps
    q = await client.get("/mma/admin/steps", params={"generation_id": gid}, headers=ADMIN)
    assert q.status_code == 200 and q.json()["steps"] == steps
    errors = await client.get("/mma/admin/errors", headers=ADMIN)
    assert errors.status_code == 200 and isinstance(errors.json()["errors"], list)
    summary = (await client.get("/admin/summary", headers=ADMIN)).json()
    assert summary["ok"] is True and isinstance(summary["totalCustomers"], int) and summary["source"]
    customers = (await client.get("/admin/customers", headers=ADMIN)).json()
    assert isinstance(customers["customers"], list) and customers["source"]
    parity = await client.get("/admin/mega/parity", headers=ADMIN)
    assert parity.status_code == 200 and isinstance(parity.json()["ok"], bool)
    assert isinstance(parity.json()["summary"], dict)


async def test_rate_limit_per_pass_id(services: Services) -> None:
    """Past the per-minute budget a create is a 429 in the legacy shape with Retry-After."""
    await services.start_all(welcome_credits=20, rate_limit_per_minute=2)
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30) as client:
        h = {"X-Mina-Pass-Id": "pass:anon:busy"}
        for _ in range(2):
            assert (await client.post("/mma/still/create", headers=h, json={"inputs": {"brief": "x"}})).status_code \
                == 200
        r = await client.post("/mma/still/create", headers=h, json={"inputs": {"brief": "x"}})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
        body = r.json()
        assert body["ok"] is False and body["error"] == "RATE_LIMITED" and isinstance(body["message"], str)
        other = await client.post("/mma/still/create", headers={"X-Mina-Pass-Id": "pass:anon:calm"},
                                  json={"inputs": {"brief": "x"}})
        assert other.status_code == 200
