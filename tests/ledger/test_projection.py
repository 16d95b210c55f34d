"""Projection handlers called directly against a real database: idempotent, forward only."""

from __future__ import annotations

from typing import Any

from libs.schemas import (
    EVENT_TYPES,
    CustomerEventRecorded,
    GenerationDone,
    GenerationFailed,
    MmaStatus,
    ScanLine,
    StatusChanged,
    StepPhase,
    StepRecorded,
)
from services.ledger.deps import LedgerDeps
from services.ledger.handlers import EVENT_HANDLERS
from tests.ledger.conftest import snapshot
from tests.ledger.events import at, every_event

PASS = "pass:user:11111111-1111-1111-1111-111111111111"


async def project(deps: LedgerDeps, *messages: Any) -> None:
    for msg in messages:
        await EVENT_HANDLERS[type(msg)](msg, deps)


async def test_every_event_type_has_a_handler() -> None:
    """The consumer is wired for everything the EVENTS stream carries."""
    assert set(EVENT_HANDLERS) == set(EVENT_TYPES.values())


async def test_every_event_replayed_twice_leaves_the_same_rows(deps: LedgerDeps, pool: Any) -> None:
    """Replaying the whole stream a second time changes no row."""
    events = every_event("a", PASS)
    assert {type(e) for e in events} == set(EVENT_TYPES.values())
    await project(deps, *events)
    first = await snapshot(pool)
    await project(deps, *events)
    assert await snapshot(pool) == first

    gen = next(r for r in first["mega_generations"] if r["mg_id"] == "generation:g-a")
    assert gen["mg_mma_status"] == "done" and gen["mg_status"] == "succeeded"
    assert gen["mg_mma_vars"]["userMessages"]["scan_lines"] == ["Looking at your vase"]
    assert gen["mg_mma_vars"]["prompts"]["clean_prompt"] == "p"
    assert gen["mg_mma_vars"]["inputs"]["userBrief"] == "a calm still life"
    assert gen["mg_image_url"] == "https://assets.example.com/o.png"
    step2 = next(r for r in first["mega_generations"] if r["mg_id"] == "mma_step:g-a:2")
    assert step2["mg_status"] == "succeeded" and step2["mg_latency_ms"] == 900

    bad = next(r for r in first["mega_generations"] if r["mg_id"] == "generation:b-a")
    assert (bad["mg_mma_status"], bad["mg_status"], bad["mg_error"]) == ("error", "failed", "Video timed out")
    assert bad["mg_parent_id"] == "generation:g-a" and bad["mg_type"] == "motion"
    bad_step = next(r for r in first["mega_generations"] if r["mg_id"] == "mma_step:b-a:1")
    assert bad_step["mg_payload"]["error"]["error_code"] == "KLING_TIMEOUT"
    admin = {r["mg_id"]: r for r in first["mega_admin"]}
    assert admin["error:b-a"]["mg_detail"]["generation_id"] == "b-a"
    assert admin["error:b-a"]["mg_detail"]["category"] == "TIMEOUT"
    assert admin["warn:o-a"]["mg_record_type"] == "warn"
    assert admin["error:dlq:MMA_EVENTS:99"]["mg_detail"]["category"] == "INVALID_MESSAGE"

    customer = first["mega_customers"][0]
    assert customer["mg_mma_preferences"]["hard_blocks"] == ["motion.light_flicker"]
    assert customer["mg_mma_preferences"]["tag_weights"] == {"style.minimal": 0.5}


async def test_status_never_moves_backward(deps: LedgerDeps, pool: Any) -> None:
    """A late `scanning` after `done` keeps the generation done."""
    done = GenerationDone(generation_id="g1", pass_id=PASS, vars={}, output_url="https://a/o.png", at=at(5))
    late = StatusChanged(generation_id="g1", pass_id=PASS, status=MmaStatus.SCANNING, at=at(2))
    await project(deps, StatusChanged(generation_id="g1", pass_id=PASS, status=MmaStatus.GENERATING), done, late)
    async with pool.acquire() as conn:
        row = await conn.fetchrow("select mg_mma_status, mg_status from mega_generations where mg_id = 'generation:g1'")
    assert tuple(row) == ("done", "succeeded")


async def test_started_step_never_overwrites_a_finished_one(deps: LedgerDeps, pool: Any) -> None:
    """A redelivered `started` record after `succeeded` leaves the step succeeded with its output."""
    base = {"generation_id": "g2", "pass_id": PASS, "step_no": 1, "step_type": "seedream_generate"}
    await project(
        deps,
        StepRecorded(**base, phase=StepPhase.SUCCEEDED, payload={"output": {"output_url": "u"}}),
        StepRecorded(**base, phase=StepPhase.STARTED, payload={"input": {}}),
    )
    async with pool.acquire() as conn:
        row = await conn.fetchrow("select mg_status, mg_payload from mega_generations where mg_id = 'mma_step:g2:1'")
    assert row["mg_status"] == "succeeded" and row["mg_payload"]["output"]["output_url"] == "u"


async def test_scan_lines_out_of_order_and_kept_by_done(deps: LedgerDeps, pool: Any) -> None:
    """Lines land at their index whatever the arrival order; the final map does not erase them."""
    await project(
        deps,
        ScanLine(generation_id="g3", pass_id=PASS, index=1, text="second"),
        ScanLine(generation_id="g3", pass_id=PASS, index=0, text="first"),
        GenerationDone(generation_id="g3", pass_id=PASS, vars={"userMessages": {"final_line": "done!"}}),
        ScanLine(generation_id="g3", pass_id=PASS, index=1, text="second"),
    )
    async with pool.acquire() as conn:
        vars_ = await conn.fetchval("select mg_mma_vars from mega_generations where mg_id = 'generation:g3'")
    assert vars_["userMessages"] == {"scan_lines": ["first", "second"], "final_line": "done!"}


async def test_preference_delta_applied_once_on_replay(deps: LedgerDeps, pool: Any) -> None:
    """The same event id twice adds its weights and blocks once."""
    event = CustomerEventRecorded(event_id="ev1", pass_id=PASS, event_type="dislike",
                                  add_hard_blocks=["motion.light_flicker", "style.neon"],
                                  tag_weight_deltas={"style.neon": -1.5})
    other = CustomerEventRecorded(event_id="ev2", pass_id=PASS, event_type="dislike",
                                  add_hard_blocks=["style.neon"], tag_weight_deltas={"style.neon": -1.0})
    await project(deps, event, event, other, other, event)
    async with pool.acquire() as conn:
        prefs = await conn.fetchval("select mg_mma_preferences from mega_customers where mg_pass_id = $1", PASS)
        events = await conn.fetchval("select count(*) from mega_generations where mg_record_type = 'mma_event'")
    assert prefs["hard_blocks"] == ["motion.light_flicker", "style.neon"]
    assert prefs["tag_weights"] == {"style.neon": -2.5}
    assert prefs["source"] == "mma" and prefs["updated_at"]
    assert events == 2


async def test_failure_writes_both_planes_even_without_a_step_row(deps: LedgerDeps, pool: Any) -> None:
    """Run plane on the generation, ops plane in mega_admin, one of each on replay."""
    failed = GenerationFailed(generation_id="g4", pass_id=PASS, code="GPT_SCHEMA_ERROR", message="Try again",
                              step_type="gpt_reader", detail={"http": {"route": "/mma/still/create", "status": 500}})
    await project(deps, failed, failed)
    async with pool.acquire() as conn:
        gen = await conn.fetchrow("select * from mega_generations where mg_id = 'generation:g4'")
        errors = await conn.fetch("select * from mega_admin where mg_detail->>'generation_id' = 'g4'")
    assert (gen["mg_mma_status"], gen["mg_status"], gen["mg_error"]) == ("error", "failed", "Try again")
    assert len(errors) == 1
    assert errors[0]["mg_route"] == "/mma/still/create" and errors[0]["mg_status"] == 500
    assert errors[0]["mg_detail"]["error_code"] == "GPT_SCHEMA_ERROR"
