"""Checkpoint layout: the prep is written once, each later transition without it; older layouts still resume."""

from __future__ import annotations

from dataclasses import asdict

import orjson

from libs.schemas import Flow, MmaStatus, StatusChanged, StepPhase, StepRecorded
from services.pipeline.checkpoint import BUCKET, LATEST_SUFFIX, CheckpointStore, RunState
from services.pipeline.flows import prepare
from tests.pipeline.conftest import collect, make_job, publish_job, publish_made_job


async def test_the_prep_is_written_once_and_each_later_transition_without_it(services, bus):
    """After a still create, the run's key holds the prep (config snapshot, plan); `.latest` the end state."""
    await services.start("ledger")
    await services.start("pipeline")
    gen = await publish_job(bus, Flow.STILL_CREATE)
    events = await collect(bus, gen)

    kv = await bus.js.key_value(BUCKET)
    key = CheckpointStore.key(gen)
    first = orjson.loads((await kv.get(key)).value or b"")
    latest = orjson.loads((await kv.get(key + LATEST_SUFFIX)).value or b"")
    assert first["step_count"] == 0 and first["status"] == "scanning"
    assert set(first["prep"]) >= {"config", "plan", "constraints"}
    assert "prep" not in latest
    assert latest["terminal"] is True and latest["step_count"] == 4
    assert latest["outbox"][-1]["type"] == "GenerationDone"  # after any message whose ack was not in yet

    state = await CheckpointStore(kv).load(gen)
    assert state is not None and state.terminal and state.prep == first["prep"]
    assert state.vars == events.done.vars


async def test_a_run_checkpointed_in_the_previous_layout_resumes(services, bus):
    """A whole state under the run's key, as the previous version wrote it after preparing: the redelivered job
    republishes its outbox, then runs every step (like_history reads the window itself) and ends done."""
    await services.start("ledger")
    job = make_job(Flow.STILL_CREATE)
    prep, vars = await prepare(job, bus, postscan_video=True)
    scanning = StatusChanged(generation_id=job.generation_id, pass_id=job.pass_id, status=MmaStatus.SCANNING)
    state = RunState(generation_id=job.generation_id, prep=prep, vars=vars, status="scanning",
                     outbox=[{"type": "StatusChanged", "data": scanning.model_dump(mode="json")}])
    kv = (await CheckpointStore.open(bus.js)).kv
    await kv.put(CheckpointStore.key(job.generation_id), orjson.dumps(asdict(state)))

    await services.start("pipeline")
    events = await collect(bus, await publish_made_job(bus, job))
    assert events.statuses[0] == "scanning"
    assert events.step_types == ["like_history", "gpt_reader", "seedream_generate", "postscan_output_still"]
    history = events.step("like_history").payload
    assert history["input"]["window"] == 5 and history["output"]["count"] == 0
    succeeded = [s.step_no for s in events.of(StepRecorded) if s.phase is StepPhase.SUCCEEDED]
    assert succeeded == [1, 2, 3, 4]
