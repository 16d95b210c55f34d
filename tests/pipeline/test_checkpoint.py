"""Checkpoint layout: the prep is written once, each later transition without it; older layouts still resume."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import asdict
from typing import Any

import nats.js.errors
import orjson
import pytest

from libs.schemas import Flow, MmaStatus, StatusChanged, StepPhase, StepRecorded
from services.pipeline.checkpoint import LATEST_SUFFIX, CheckpointStore, Outbox, RunState
from services.pipeline.flows import prepare
from tests.helpers import wait_for
from tests.pipeline.conftest import collect, make_job, publish_job, publish_made_job


async def test_the_prep_is_written_once_and_each_later_transition_without_it(services, bus, settings):
    """While a still create runs, the run's key holds the prep (config snapshot, plan) and `.latest` the
    later transitions without it; once it ends only a small terminal marker is left."""
    await services.start("ledger")
    await services.start("pipeline", offline_latency_ms=300)
    gen = await publish_job(bus, Flow.STILL_CREATE)
    store = await CheckpointStore.open(bus.js, settings)
    key = CheckpointStore.key(gen)

    async def mid_run() -> tuple[dict[str, Any], dict[str, Any]] | None:
        try:
            first, latest = await store.kv.get(key), await store.kv.get(key + LATEST_SUFFIX)
        except nats.js.errors.KeyNotFoundError:
            return None
        return orjson.loads(first.value or b""), orjson.loads(latest.value or b"")

    first, latest = await wait_for(mid_run, 20, interval=0.02, what="a checkpoint mid-run")
    # the first write carries the prep with whatever was decided before it went out (like_history takes no
    # time: it shares that write), every later one goes to `.latest`
    assert first["step_count"] <= 1 and first["status"] in ("scanning", "prompting")
    assert set(first["prep"]) >= {"config", "plan", "constraints"}
    assert "prep" not in latest and latest["step_count"] > first["step_count"] and latest["terminal"] is False
    state = await store.load(gen)
    assert state is not None and state.prep == first["prep"] and not state.terminal

    await collect(bus, gen)

    async def ended() -> RunState | None:
        state = await store.load(gen)
        return state if state is not None and state.terminal and not state.vars else None

    marker = await wait_for(ended, 10, what="the terminal marker")
    assert marker.terminal and marker.status == "done" and marker.step_count == 4
    assert marker.prep == {} and marker.vars == {} and marker.outbox == []


async def test_a_run_checkpointed_in_the_previous_layout_resumes(services, bus, settings):
    """A whole state under the run's key, as the previous version wrote it after preparing: the redelivered job
    republishes its outbox, then runs every step (like_history reads the window itself) and ends done."""
    await services.start("ledger")
    job = make_job(Flow.STILL_CREATE)
    prep, vars, _ = await prepare(job, bus, postscan_video=True)
    scanning = StatusChanged(generation_id=job.generation_id, pass_id=job.pass_id, status=MmaStatus.SCANNING)
    state = RunState(generation_id=job.generation_id, prep=prep, vars=vars, status="scanning",
                     outbox=[{"type": "StatusChanged", "data": scanning.model_dump(mode="json")}])
    kv = (await CheckpointStore.open(bus.js, settings)).kv
    await kv.put(CheckpointStore.key(job.generation_id), orjson.dumps(asdict(state)))

    await services.start("pipeline")
    events = await collect(bus, await publish_made_job(bus, job))
    assert events.statuses[0] == "scanning"
    assert events.step_types == ["like_history", "gpt_reader", "seedream_generate", "postscan_output_still"]
    history = events.step("like_history").payload
    assert history["input"]["window"] == 5 and history["output"]["count"] == 0
    succeeded = [s.step_no for s in events.of(StepRecorded) if s.phase is StepPhase.SUCCEEDED]
    assert succeeded == [1, 2, 3, 4]


async def test_a_checkpoint_waits_for_the_output_upload_it_records(bus, settings):
    """A step's output is uploaded while the run goes on; the checkpoint recording it (and the events that
    follow it) waits for the upload, and a failed upload fails the run's outbox instead of being recorded."""
    store = await CheckpointStore.open(bus.js, settings)
    gen = f"held{uuid.uuid4().hex}"
    outbox = Outbox(store, bus)
    uploaded: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    outbox.hold([uploaded])
    state = RunState(generation_id=gen, step_count=3, status="postscan")
    outbox.queue(state, [StatusChanged(generation_id=gen, pass_id="pass:user:held", status=MmaStatus.POSTSCAN)])
    flushed = asyncio.create_task(outbox.flush())  # starts the writer
    # a run with nothing held, started after it: once its transition is written and published, the held
    # one would have been too (the same connection, the same bucket, sent first)
    control = f"held{uuid.uuid4().hex}"
    other = Outbox(store, bus)
    other.queue(RunState(generation_id=control, step_count=3),
                [StatusChanged(generation_id=control, pass_id="pass:user:held", status=MmaStatus.POSTSCAN)])
    await asyncio.wait_for(other.flush(), 10)
    assert await store.load(control) is not None
    assert await store.load(gen) is None and not flushed.done()
    assert await bus.last_seq(f"mma.evt.{gen}.status") == 0
    uploaded.set_result(None)
    await asyncio.wait_for(flushed, 10)
    written = await store.load(gen)
    assert written is not None and written.step_count == 3
    assert await bus.last_seq(f"mma.evt.{gen}.status") > 0

    failed_gen = f"held{uuid.uuid4().hex}"
    outbox = Outbox(store, bus)
    broken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    broken.set_exception(OSError("disk full"))
    outbox.hold([broken])
    outbox.queue(RunState(generation_id=failed_gen, step_count=3),
                 [StatusChanged(generation_id=failed_gen, pass_id="pass:user:held", status=MmaStatus.POSTSCAN)])
    with pytest.raises(OSError, match="disk full"):
        await asyncio.wait_for(outbox.flush(), 10)
    assert await store.load(failed_gen) is None
    assert await bus.last_seq(f"mma.evt.{failed_gen}.status") == 0


async def test_a_run_that_waits_while_a_write_is_in_flight_has_its_state_written_behind_it(bus, settings):
    """The run waits for a transition while its first checkpoint (the prep) is still unacked: the second write
    goes out at once behind the first, not after its ack, and to the same key with the prep (were the first
    refused, the key would still hold a whole state); the events still leave in the order decided, and once
    the prep is acked the next transition goes to `.latest` without it."""
    store = await CheckpointStore.open(bus.js, settings)
    gen = f"piped{uuid.uuid4().hex}"
    who = "pass:user:piped"
    outbox = Outbox(store, bus)
    written_when_sent: list[int] = []  # how many transitions were written (acked) as each write went out
    start_put = store.start_put

    async def watched(generation_id: str, data: bytes, *, with_prep: bool = False) -> Any:
        written_when_sent.append(outbox.written)
        return await start_put(generation_id, data, with_prep=with_prep)

    store.start_put = watched  # type: ignore[method-assign]  # observed, not replaced
    state = RunState(generation_id=gen, prep={"plan": [["gpt_reader", None]]}, status="scanning")
    outbox.queue(state, [StatusChanged(generation_id=gen, pass_id=who, status=MmaStatus.SCANNING)], with_prep=True)
    outbox.kick()
    await wait_for(lambda: outbox.in_flight, 10, interval=0, what="the prep checkpoint on the wire")

    state.step_count, state.status = 1, "prompting"
    outbox.queue(state, [StatusChanged(generation_id=gen, pass_id=who, status=MmaStatus.PROMPTING)])
    await asyncio.wait_for(outbox.durable(), 10)
    assert written_when_sent == [0, 0]  # the second went out before the first's ack was read
    assert outbox.written == 2

    first = orjson.loads((await store.kv.get(CheckpointStore.key(gen))).value or b"")
    assert first["step_count"] == 1 and first["status"] == "prompting" and first["prep"] == state.prep
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await store.kv.get(CheckpointStore.key(gen) + LATEST_SUFFIX)

    state.step_count, state.status = 2, "generating"
    await outbox.commit(state, [StatusChanged(generation_id=gen, pass_id=who, status=MmaStatus.GENERATING)])
    latest = orjson.loads((await store.kv.get(CheckpointStore.key(gen) + LATEST_SUFFIX)).value or b"")
    assert latest["step_count"] == 2 and "prep" not in latest
    resumed = await store.load(gen)
    assert resumed is not None and resumed.step_count == 2 and resumed.prep == state.prep

    statuses: list[str] = []
    async with asyncio.timeout(10):
        async for _, msg in bus.follow(f"mma.evt.{gen}.>"):
            statuses.append(msg.status.value)
            if len(statuses) == 3:
                break
    assert statuses == ["scanning", "prompting", "generating"]
