"""The four flows end to end: offline provider, real NATS, real ledger and Postgres."""

from __future__ import annotations

import asyncpg
from PIL import Image

from libs.assets import build_asset_store
from libs.schemas import Assets, Feedback, Flow, GenerationRequest, Inputs, MmaStatus
from tests.helpers import wait_for
from tests.pipeline.conftest import Events, collect, publish_job, upload

GPT_STEPS = {"scan_product", "scan_logo", "scan_inspiration", "scan_input_still", "gpt_reader",
             "gpt_feedback_still", "motion_suggestion", "gpt_reader_motion", "gpt_feedback_motion",
             "postscan_output_still", "postscan_output_still_feedback", "postscan_output_video",
             "postscan_output_video_feedback"}
GENERATE_KEYS = {"prompt", "settings_key", "settings_version", "settings_id", "settings_resolved"}
VAR_KEYS = {"version", "mode", "assets", "scans", "history", "inputs", "prompts", "feedback", "userMessages",
            "settings", "outputs", "meta"}


def assert_contract(events: Events, expected: list[str]) -> None:
    """Step types in order, contiguous numbers, MMA.md payload keys, contiguous scan lines."""
    assert events.step_types == expected
    assert [s.step_no for s in events.steps] == list(range(1, len(expected) + 1))
    assert [line.index for line in events.lines] == list(range(len(events.lines)))
    for step in events.steps:
        payload = step.payload
        assert set(payload) == {"input", "output", "timing", "error"}, step.step_type
        assert payload["error"] is None
        timing = payload["timing"]
        assert {"started_at", "ended_at", "duration_ms", "provider_ms"} <= set(timing)
        assert 0 <= timing["provider_ms"] <= timing["duration_ms"] + 1
        if step.step_type.startswith(("scan_", "postscan_")) or "_generate" in step.step_type:
            assert timing["provider_ms"] > 0, step.step_type  # the offline provider really reads and renders
        if step.step_type in GPT_STEPS:
            assert {"ctx_key", "ctx_version", "ctx_id"} <= set(payload["input"]), step.step_type
        if step.step_type.startswith(("scan_", "postscan_")):
            assert payload["output"]["crt"] and payload["output"]["userMessage_line"]
        if "_generate" in step.step_type:
            assert set(payload["input"]) >= GENERATE_KEYS, step.step_type
            assert payload["output"]["output_url"] and payload["output"]["prediction_id"]
    ranks = [MmaStatus(s).rank for s in events.statuses]
    assert ranks == sorted(ranks)


async def read_generation(database_url: str, generation_id: str, status: str) -> asyncpg.Record:
    conn = await asyncpg.connect(database_url)
    try:
        async def row() -> asyncpg.Record | None:
            found = await conn.fetchrow(
                "select * from mega_generations where mg_id = $1 and mg_mma_status = $2",
                f"generation:{generation_id}", status)
            return found

        return await wait_for(row, 15, what=f"generation row {status}")
    finally:
        await conn.close()


async def test_still_create_with_every_asset(services, bus, settings, database_url):
    """Product, logo and two inspirations are scanned from their real pixels; the output is a PNG in our store."""
    await services.start("ledger")
    await services.start("pipeline")
    request = GenerationRequest(
        assets=Assets(product_image_url=await upload(settings, (200, 30, 30)),
                      logo_image_url=await upload(settings, (240, 240, 240)),
                      inspiration_image_urls=[await upload(settings, (40, 60, 200)),
                                              await upload(settings, (30, 150, 60))]),
        inputs=Inputs(user_brief="a perfume bottle on travertine", style="minimal"),
        vision_intelligence=False,
    )
    gen = await publish_job(bus, Flow.STILL_CREATE, request)
    events = await collect(bus, gen)
    assert_contract(events, ["scan_product", "scan_logo", "scan_inspiration", "scan_inspiration", "like_history",
                             "gpt_reader", "seedream_generate", "postscan_output_still"])
    assert "red" in events.step("scan_product").payload["output"]["crt"]
    assert events.step("like_history").payload["input"]["window"] == 20
    reader = events.step("gpt_reader").payload
    assert set(reader["input"]["parts"]) == {
        "product_crt", "logo_crt", "inspiration_crt", "style", "userBrief", "style_history_csv"}
    assert reader["input"]["input_gpt_reader"] and reader["output"]["clean_prompt"]

    done = events.done
    store = build_asset_store(settings)
    assert done.output_url and done.output_url.startswith(store.public_base + "/")
    assert done.provider == "seedream" and done.content_type == "image"
    assert set(done.vars) >= VAR_KEYS
    assert len(done.vars["scans"]["inspiration_crt"]) == 2
    assert done.vars["userMessages"]["scan_lines"] == [line.text for line in events.lines]
    assert done.vars["meta"]["ctx_versions"]["gpt_reader"] == 1
    assert done.vars["meta"]["settings_versions"]["seedream"] == 1
    assert done.vars["outputs"]["seedream_image_url"] == done.output_url
    image = Image.open(store.path_of(store.key_of(done.output_url)))  # type: ignore[attr-defined]
    assert image.format == "PNG" and image.size[0] > 0

    row = await read_generation(database_url, gen, "done")
    assert row["mg_output_url"] == done.output_url and row["mg_status"] == "succeeded"


async def test_tweak_animate_and_video_tweak_chain(services, bus, settings):
    """A still, its tweak, an animation of the tweak and a tweak of the video, each a new generation."""
    await services.start("ledger")
    await services.start("pipeline")
    still = await publish_job(bus, Flow.STILL_CREATE, GenerationRequest(inputs=Inputs(user_brief="a gold ring")))
    still_events = await collect(bus, still)

    tweak = await publish_job(bus, Flow.STILL_TWEAK, GenerationRequest(feedback=Feedback(still_feedback="warmer")),
                              parent=still)
    tweak_events = await collect(bus, tweak)
    assert_contract(tweak_events, ["gpt_feedback_still", "seedream_generate_feedback",
                                   "postscan_output_still_feedback"])
    feedback_step = tweak_events.step("gpt_feedback_still").payload
    assert feedback_step["input"]["previous_prompt"] == still_events.done.prompt
    assert feedback_step["output"]["prompt"] and "warmer" in feedback_step["input"]["input_gpt_feedback"]
    assert tweak_events.done.vars["meta"]["parent_generation_id"] == still

    animate = await publish_job(
        bus, Flow.VIDEO_ANIMATE,
        GenerationRequest(assets=Assets(input_still_generation_id=tweak),
                          inputs=Inputs(motion_user_brief="slow orbit", duration_s=5)), price=5)
    animate_events = await collect(bus, animate)
    # the tweak was postscanned, so its caption is known: no scan_input_still
    assert_contract(animate_events, ["gpt_reader_motion", "kling_generate", "postscan_output_video"])
    done = animate_events.done
    assert done.provider == "kling" and done.content_type == "motion"
    assert done.output_url and done.output_url.endswith(".mp4")
    assert done.vars["assets"]["input_still_image_id"] == tweak_events.done.output_url
    assert done.vars["settings"]["kling"]["duration"] == 5

    video_tweak = await publish_job(
        bus, Flow.VIDEO_TWEAK, GenerationRequest(feedback=Feedback(motion_feedback="slower")), parent=animate,
        price=5)
    vt_events = await collect(bus, video_tweak)
    assert_contract(vt_events, ["gpt_feedback_motion", "kling_generate_feedback", "postscan_output_video_feedback"])
    assert vt_events.step("gpt_feedback_motion").payload["input"]["previous_motion_prompt"] == done.prompt


async def test_animate_upload_type_for_me_and_suggest_only(services, bus, settings):
    """An uploaded still is scanned first; type-for-me suggests; suggest-only ends without a video."""
    await services.start("ledger")
    await services.start("pipeline")
    still_url = await upload(settings, (230, 210, 60))
    gen = await publish_job(bus, Flow.VIDEO_ANIMATE, GenerationRequest(
        assets=Assets(input_still_image_url=still_url), inputs=Inputs(type_for_me=True)), price=5)
    events = await collect(bus, gen)
    assert_contract(events, ["scan_input_still", "motion_suggestion", "kling_generate", "postscan_output_video"])
    assert "yellow" in events.done.vars["scans"]["still_crt"]

    only = await publish_job(bus, Flow.VIDEO_ANIMATE, GenerationRequest(
        assets=Assets(input_still_image_url=still_url), inputs=Inputs(type_for_me=True, suggest_only=True)))
    only_events = await collect(bus, only)
    assert_contract(only_events, ["scan_input_still", "motion_suggestion"])
    assert only_events.done.status is MmaStatus.SUGGESTED and only_events.done.content_type == "text"
    assert only_events.done.vars["prompts"]["suggested_prompt"]
