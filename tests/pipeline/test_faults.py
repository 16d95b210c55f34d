"""Provider faults through the real SDKs against local wire servers, and resume after SIGKILL."""

from __future__ import annotations

import json

import asyncpg

from libs.final import last_event
from libs.schemas import Flow, GenerationRequest, Inputs, StepPhase, StepRecorded
from tests.helpers import wait_for
from tests.pipeline.conftest import collect, publish_job


async def test_replicate_500_then_success_records_one_retry(services, bus, replicate_server):
    """A 500 on create is retried once; the step records 2 attempts and the output is re-hosted by us."""
    await services.start("ledger")
    await services.start("pipeline", provider="replicate", replicate_base_url=replicate_server.url,
                         replicate_api_token="r8-test", provider_poll_interval_s=0.05,
                         fetch_allow_hosts=json.dumps([replicate_server.host_port]))
    replicate_server.fail("create_prediction", 500)
    events = await collect(bus, await publish_job(bus, Flow.STILL_CREATE))
    step = events.step("seedream_generate")
    assert step.payload["output"]["attempts"] == 2
    assert replicate_server.count("create_prediction") == 2
    assert replicate_server.count("download") == 1
    assert not events.done.output_url.startswith(replicate_server.url)  # type: ignore[union-attr]
    started = [s for s in events.of(StepRecorded) if s.phase is StepPhase.STARTED]
    assert started and started[0].payload["output"]["prediction_id"] == step.payload["output"]["prediction_id"]
    assert "r8-test" not in services.all_logs()


async def test_replicate_timeout_beyond_retries_fails_in_both_planes(services, bus, replicate_server,
                                                                     database_url):
    """A prediction that never finishes: SEEDREAM_TIMEOUT after every attempt, run and ops rows, `failed`."""
    await services.start("ledger")
    await services.start("pipeline", provider="replicate", replicate_base_url=replicate_server.url,
                         replicate_api_token="r8-test", provider_timeout_s=0.6, provider_max_attempts=2,
                         provider_poll_interval_s=0.05)
    replicate_server.never_finish = True
    gen = await publish_job(bus, Flow.STILL_CREATE)
    events = await collect(bus, gen)
    failed = events.failed
    assert failed.code == "SEEDREAM_TIMEOUT" and failed.step_type == "seedream_generate"
    assert failed.detail["category"] == "TIMEOUT" and failed.detail["emoji"] == "⏱️"
    assert failed.detail["retry"] == {"attempt": 2, "max": 2}
    assert failed.detail["settings"]["id"] == "app_config:mma.provider.seedream.defaults.v1"
    assert failed.vars["prompts"]["clean_prompt"]  # the partial map is kept
    step = next(s for s in events.of(StepRecorded) if s.phase is StepPhase.FAILED)
    assert step.payload["error"]["error_code"] == "SEEDREAM_TIMEOUT"
    assert step.payload["error"]["retry"] == {"attempt": 2, "max": 2}
    assert replicate_server.count("create_prediction") == 2
    assert replicate_server.count("cancel_prediction") == 2

    conn = await asyncpg.connect(database_url)
    try:
        gen_row = await wait_for(lambda: conn.fetchrow(
            "select * from mega_generations where mg_id = $1 and mg_mma_status = 'error'", f"generation:{gen}"),
            15, what="generation error row")
        assert gen_row["mg_status"] == "failed" and gen_row["mg_error"]
        await wait_for(lambda: conn.fetchrow(
            "select 1 from mega_generations where mg_record_type = 'mma_step' and mg_generation_id = $1 "
            "and mg_payload->'error'->>'error_code' = 'SEEDREAM_TIMEOUT'", gen), 15, what="failed step row")
        await wait_for(lambda: conn.fetchrow(
            "select 1 from mega_admin where mg_record_type = 'error' and mg_detail->>'generation_id' = $1", gen),
            15, what="ops error row")
    finally:
        await conn.close()


async def test_gpt_prose_is_a_schema_error(services, bus, openai_server):
    """The model answers prose instead of JSON: GPT_SCHEMA_ERROR on gpt_reader, category 🧠."""
    await services.start("ledger")
    await services.start("pipeline", provider="openai", openai_base_url=openai_server.base_url,
                         openai_api_key="sk-test")
    openai_server.answer_with("Sure! Here is a lovely prompt: a bottle on a rock, golden hour.")
    events = await collect(bus, await publish_job(bus, Flow.STILL_CREATE, GenerationRequest(
        inputs=Inputs(user_brief="bottle"))))
    failed = events.failed
    assert failed.code == "GPT_SCHEMA_ERROR" and failed.step_type == "gpt_reader"
    assert failed.detail["category"] == "GPT_SCHEMA_ERROR" and failed.detail["emoji"] == "🧠"
    assert failed.detail["ctx"]["key"] == "mma.ctx.gpt_reader"
    assert openai_server.count("chat_completion") == 1  # a schema error is not retried


async def test_openai_500_is_retried_then_succeeds(services, bus, openai_server):
    """A 500 from the chat endpoint is retried; the GPT step records its attempts."""
    await services.start("ledger")
    await services.start("pipeline", provider="openai", openai_base_url=openai_server.base_url,
                         openai_api_key="sk-test")
    openai_server.fail("chat_completion", 500)
    events = await collect(bus, await publish_job(bus, Flow.STILL_CREATE))
    assert events.step("gpt_reader").payload["output"]["attempts"] == 2
    assert events.step("gpt_reader").payload["output"]["clean_prompt"].startswith("wire prompt from:")


async def test_sigkill_during_seedream_generate_resumes_without_a_second_prediction(
        services, bus, replicate_server):
    """Killed while waiting on Replicate, restarted: same prediction reused, steps not duplicated, done."""
    await services.start("ledger")
    replicate_server.processing_s = 4.0
    overrides = {"provider": "replicate", "replicate_base_url": replicate_server.url,
                 "replicate_api_token": "r8-test", "provider_poll_interval_s": 0.1, "ack_wait_s": 2,
                 "fetch_allow_hosts": json.dumps([replicate_server.host_port])}
    first = await services.start("pipeline", **overrides)
    gen = await publish_job(bus, Flow.STILL_CREATE)
    await wait_for(lambda: replicate_server.count("create_prediction") == 1, 20, what="prediction created")
    await wait_for(lambda: replicate_server.count("get_prediction") >= 1, 10, what="waiting on the prediction")

    async def recorded() -> bool:  # the STARTED record goes out once the checkpoint holding the id is written
        step = await last_event(bus, f"mma.evt.{gen}.step")
        return isinstance(step, StepRecorded) and step.phase is StepPhase.STARTED

    await wait_for(recorded, 10, what="the prediction id recorded")
    first.kill()
    await services.start("pipeline", **overrides)
    events = await collect(bus, gen, timeout=40)

    assert events.step_types == ["like_history", "gpt_reader", "seedream_generate", "postscan_output_still"]
    assert replicate_server.count("create_prediction") == 1
    step = events.step("seedream_generate")
    assert step.payload["output"]["resumed_prediction"] is True
    succeeded = [s.step_no for s in events.of(StepRecorded) if s.phase is StepPhase.SUCCEEDED]
    assert succeeded == [1, 2, 3, 4]
