"""Versioned config and taste: a new ctx version applies to the next run; hard blocks reach every prompt."""

from __future__ import annotations

from libs.schemas import (
    AddConfigVersion,
    Assets,
    ConfigEntry,
    CustomerEventRecorded,
    CustomerView,
    Flow,
    GenerationRequest,
    GetCustomer,
    Inputs,
)
from tests.helpers import wait_for
from tests.pipeline.conftest import collect, publish_job, upload


async def test_new_ctx_version_is_used_by_the_next_run_without_restart(services, bus):
    """Run 1 records gpt_reader v1; after v2 is inserted, run 2 (same process) records v2."""
    await services.start("ledger")
    pipeline = await services.start("pipeline")
    first = await collect(bus, await publish_job(bus, Flow.STILL_CREATE))
    added = await bus.request(AddConfigVersion(key="mma.ctx.gpt_reader", value={
        "system": "v2: write one bold editorial prompt. Answer JSON only."}), ConfigEntry)
    assert added.version == 2
    second = await collect(bus, await publish_job(bus, Flow.STILL_CREATE))

    assert first.step("gpt_reader").payload["input"]["ctx_version"] == 1
    assert first.step("gpt_reader").payload["input"]["ctx_id"] == "app_config:mma.ctx.gpt_reader.v1"
    step = second.step("gpt_reader").payload["input"]
    assert (step["ctx_key"], step["ctx_version"], step["ctx_id"]) == (
        "mma.ctx.gpt_reader", 2, "app_config:mma.ctx.gpt_reader.v2")
    assert second.done.vars["meta"]["ctx_versions"]["gpt_reader"] == 2
    assert first.done.vars["meta"]["ctx_versions"]["gpt_reader"] == 1
    assert pipeline.ready_count() == 1


async def test_provider_settings_deep_merge_defaults_and_request(services, bus):
    """Resolved settings = defaults, then request overrides (recorded with the preset's id)."""
    await services.start("ledger")
    await services.start("pipeline")
    events = await collect(bus, await publish_job(bus, Flow.STILL_CREATE, GenerationRequest(
        settings={"seedream": {"aspect_ratio": "4:5", "size": "4K"}})))
    step = events.step("seedream_generate").payload["input"]
    assert step["settings_resolved"]["aspect_ratio"] == "4:5"
    assert step["settings_resolved"]["size"] == "4K"
    assert step["settings_resolved"]["max_images"] == 1  # from the defaults
    assert step["settings_id"] == "app_config:mma.provider.seedream.defaults.v1"


async def test_hard_block_becomes_a_constraint_in_every_prompt(services, bus, settings, openai_server):
    """After `motion.light_flicker` is blocked, the GPT input and the Kling prompt both forbid flicker."""
    await services.start("ledger")
    await services.start("pipeline", provider="openai", openai_base_url=openai_server.base_url,
                         openai_api_key="sk-test")
    pass_id = "pass:user:flicker-hater"
    await bus.publish(CustomerEventRecorded(event_id="evt-block-1", pass_id=pass_id, event_type="preference_set",
                                            payload={"hard_block": "motion.light_flicker"},
                                            add_hard_blocks=["motion.light_flicker"]))

    async def blocked() -> bool:
        view = await bus.request(GetCustomer(pass_id=pass_id), CustomerView)
        return "motion.light_flicker" in (view.preferences.get("hard_blocks") or [])

    await wait_for(blocked, 15, what="hard block projected")
    still_url = await upload(settings, (60, 60, 60))
    events = await collect(bus, await publish_job(bus, Flow.VIDEO_ANIMATE, GenerationRequest(
        assets=Assets(input_still_image_url=still_url), inputs=Inputs(motion_user_brief="candle light")),
        pass_id=pass_id, price=5))

    motion = events.step("gpt_reader_motion").payload
    assert "no flicker" in motion["input"]["input_gpt_reader_motion"]
    assert "no flicker" in motion["output"]["motion_prompt"]
    kling_prompt = events.step("kling_generate").payload["input"]["prompt"]
    assert "no flicker" in kling_prompt and "stable lighting" in kling_prompt
    assert any("no flicker" in text for text in openai_server.user_texts())
    assert events.done.vars["meta"]["hard_blocks"] == ["motion.light_flicker"]
