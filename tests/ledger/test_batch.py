"""Batched projection: exactly the rows of one-by-one projection, and a poison event costs only itself."""

from __future__ import annotations

import random
from typing import Any

import pytest

from libs.bus import Bus
from libs.errors import InvalidMessageError
from libs.schemas import (
    BusMessage,
    Flow,
    GenerationAccepted,
    MmaStatus,
    OpsLogged,
    SessionStarted,
    StatusChanged,
    StepPhase,
    StepRecorded,
)
from services.ledger import queries as q
from services.ledger.deps import LedgerDeps
from services.ledger.handlers import EVENT_HANDLERS, project_batch
from services.ledger.staging import SetForm
from tests.conftest import Services
from tests.helpers import wait_for
from tests.ledger.conftest import snapshot
from tests.ledger.events import at, every_event

PASS = "pass:user:22222222-2222-2222-2222-222222222222"
# written with now(): when, not what
NOW_COLUMNS = {"mg_created_at", "mg_mma_preferences_updated_at"}


async def clear(pool: Any) -> None:
    async with pool.acquire() as conn:
        await conn.execute("truncate mega_generations, mega_customers, mega_admin")


async def rows(pool: Any) -> dict[str, list[dict[str, Any]]]:
    tables = await snapshot(pool)
    for customer in tables["mega_customers"]:
        for column in NOW_COLUMNS:
            customer.pop(column, None)
        if customer.get("mg_mma_preferences"):
            customer["mg_mma_preferences"].pop("updated_at", None)
    return tables


def stream(seed: int) -> list[BusMessage]:
    """Two lifecycles interleaved, shuffled a little, with redeliveries: any order the bus may hand over."""
    rnd = random.Random(seed)
    events = every_event("x", PASS) + every_event("y", PASS)
    rnd.shuffle(events)
    events += rnd.sample(events, 12)  # redeliveries
    # generations whose row is first created by a step or a status (clocks differ across services):
    # the first event in stream order sets its created-at, as it does one by one
    accepted = next(e for e in every_event("early", PASS) if type(e).__name__ == "GenerationAccepted")
    early = [
        StepRecorded(generation_id="g-early", pass_id=PASS, step_no=1, step_type="scan_product",
                     phase=StepPhase.STARTED, payload={}, at=at(30)),
        StatusChanged(generation_id="g-early", pass_id=PASS, status=MmaStatus.SCANNING, at=at(20)),
        StatusChanged(generation_id="g-late", pass_id=PASS, status=MmaStatus.SCANNING, at=at(0)),
        accepted.model_copy(update={"generation_id": "g-late", "at": at(40)}),
    ]
    return early + events


async def test_batches_leave_exactly_the_rows_of_one_by_one(deps: LedgerDeps, pool: Any) -> None:
    """Whatever the order and the batch boundaries, a batch projects what one event at a time does."""
    for seed in range(4):
        events = stream(seed)
        await clear(pool)
        for msg in events:
            await EVENT_HANDLERS[type(msg)](msg, deps)
        expected = await rows(pool)
        assert expected["mega_generations"] and expected["mega_admin"]

        await clear(pool)
        rnd = random.Random(seed)
        i = 0
        while i < len(events):
            size = rnd.choice([1, 3, 7, len(events)])
            await project_batch(events[i:i + size], deps)
            i += size
        assert await rows(pool) == expected, f"seed {seed}"


def backlog(generations: int) -> list[BusMessage]:
    """What a ledger restart finds: lifecycles interleaved, every step started then finished, redeliveries."""
    rnd = random.Random(generations)
    events: list[BusMessage] = []
    for g in range(generations):
        gen, pass_id = f"g-{g}", f"pass:anon:backlog-{g % 7}"
        events.append(GenerationAccepted(generation_id=gen, pass_id=pass_id, flow=Flow.STILL_CREATE, price=1,
                                         balance=9, session_id=f"s-{g}", at=at(g)))
        events.append(SessionStarted(session_id=f"s-{g}", pass_id=pass_id, at=at(g)))
        for step, status in enumerate((MmaStatus.SCANNING, MmaStatus.PROMPTING, MmaStatus.GENERATING), 1):
            events.append(StatusChanged(generation_id=gen, pass_id=pass_id, status=status, at=at(g + step)))
            for phase in (StepPhase.STARTED, StepPhase.SUCCEEDED):
                events.append(StepRecorded(
                    generation_id=gen, pass_id=pass_id, step_no=step, step_type="gpt_reader", phase=phase,
                    provider="offline" if phase is StepPhase.SUCCEEDED else None,
                    latency_ms=step * 10 if phase is StepPhase.SUCCEEDED else None,
                    payload={"input": {"n": step}, "output": {"phase": phase.value}}, at=at(g + step)))
        events.append(OpsLogged(log_id=f"o-{g}", level="warn", actor_pass_id=pass_id, detail={"g": g}, at=at(g)))
    # interleave the lifecycles as several services publishing at once do, then redeliver some
    chunks = [events[i:i + 5] for i in range(0, len(events), 5)]
    rnd.shuffle(chunks)
    shuffled = [e for chunk in chunks for e in chunk]
    return shuffled + rnd.sample(shuffled, len(shuffled) // 10)


async def test_a_backlog_batch_leaves_the_rows_of_one_by_one(deps: LedgerDeps, pool: Any) -> None:
    """Hundreds of events per batch, keys repeated within it: the set-based writes change nothing; replay neither."""
    events = backlog(40)
    assert len(events) > 500
    for msg in events:
        await EVENT_HANDLERS[type(msg)](msg, deps)
    expected = await rows(pool)
    statuses = {r["mg_mma_status"] for r in expected["mega_generations"] if r["mg_record_type"] == "generation"}
    assert statuses == {"generating"}

    await clear(pool)
    for i in range(0, len(events), 500):
        await project_batch(events[i:i + 500], deps)
    assert await rows(pool) == expected
    await project_batch(events, deps)
    assert await rows(pool) == expected


@pytest.mark.parametrize("bad", ["\ud800", 10**30], ids=["lone-surrogate", "int-beyond-64-bits"])
async def test_json_postgres_never_sees_is_bad_data_in_a_batch_too(deps: LedgerDeps, pool: Any, bad: object) -> None:
    """Refused as bad data (the bus re-runs the batch one by one and dead-letters it), never retried for ever."""
    good = StepRecorded(generation_id="g-ok", pass_id=PASS, step_no=1, step_type="scan_product",
                        phase=StepPhase.SUCCEEDED, payload={"ok": True}, at=at(0))
    poison = good.model_copy(update={"generation_id": "g-bad", "payload": {"x": bad}})
    with pytest.raises(InvalidMessageError, match="refused by Postgres: DataError"):
        await project_batch([good, poison], deps)
    assert (await rows(pool))["mega_generations"] == []
    await EVENT_HANDLERS[StepRecorded](good, deps)
    with pytest.raises(InvalidMessageError):
        await EVENT_HANDLERS[StepRecorded](poison, deps)


def test_a_set_form_refuses_a_per_row_parameter_in_its_conflict_rule() -> None:
    """A conflict rule sees no `select` column: such a parameter must be passed once (type None)."""
    with pytest.raises(ValueError, match="outside the values row"):
        SetForm(q.MOVE_STATUS, ("text", "text", "text", "text", "timestamptz", "text"))
    with pytest.raises(ValueError, match="5 types"):
        SetForm(q.MOVE_STATUS, ("text", "text", "text", "text", "timestamptz"))
    with pytest.raises(ValueError, match="no `values"):
        SetForm(q.SET_VARS, ("text", "jsonb"))


async def test_a_poison_event_is_dead_lettered_alone(services: Services, bus: Bus, pool: Any) -> None:
    """A batch with one event Postgres refuses (a NUL in a text column): that one is dead-lettered, the rest land."""
    for i in range(40):
        await bus.publish(SessionStarted(session_id=f"ok-{i}", pass_id=PASS, at=at(i)))
        if i == 17:
            await bus.publish(SessionStarted(session_id="poison", pass_id=PASS, title="bad\x00title", at=at(i)))
    await services.start("ledger")  # the whole backlog is waiting: it comes as one batch

    async def sessions() -> list[str]:
        async with pool.acquire() as conn:
            return [r["mg_session_id"] for r in await conn.fetch(
                "select mg_session_id from mega_generations where mg_record_type = 'session'")]

    async def dead_letters() -> list[Any]:
        async with pool.acquire() as conn:
            return list(await conn.fetch(
                "select * from mega_admin where mg_detail->>'category' = 'INVALID_MESSAGE'"))

    async def all_in() -> bool:
        return len(await sessions()) >= 40 and len(await dead_letters()) >= 1

    await wait_for(all_in, 30, what="40 sessions and one dead letter")
    assert sorted(await sessions()) == sorted(f"ok-{i}" for i in range(40))
    dead = await dead_letters()
    assert len(dead) == 1
    assert '"poison"' in dead[0]["mg_detail"]["data"]
    assert "refused by Postgres" in dead[0]["mg_detail"]["reason"]
    logged = [e for p in services.procs for e in p.log_lines()]
    assert any(e.get("event") == "bus.batch_failed" for e in logged)
    assert any(e.get("event") == "ledger.batch_projected" for e in logged)
