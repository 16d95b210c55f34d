"""Ledger projection: a backlog of step events published while the ledger is stopped, then drained.

Each event is a `StepRecorded` (an `mma_step` row, plus the customer and generation
rows it hangs on). Baseline: the same rows written raw with the ledger's own
statements from one asyncpg connection (executemany, 1,000 rows per transaction);
for context, a row-at-a-time loop and raw COPY (`copy_records_to_table` of the same rows,
1,000 per transaction, into empty tables: plain inserts, no upsert rule - the floor of
what Postgres takes, not something the projection may do, since a redelivered or repeated
event must not insert a second row).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.common import Figure, connect, ratio
from bench.profile import Profile, Recorder
from bench.stack import Stack
from libs.schemas import StepPhase, StepRecorded
from services.ledger import queries as q
from services.ledger.adapters.pg import init_connection
from services.ledger.migrate import apply_migrations

STEPS_PER_GENERATION = 10
CUSTOMERS = 100
BATCH = 1000
TARGET = 0.8
GEN_COLUMNS = ("mg_id", "mg_record_type", "mg_pass_id", "mg_generation_id", "mg_mma_status", "mg_status",
               "mg_source_system", "mg_created_at")
STEP_COLUMNS = ("mg_id", "mg_record_type", "mg_pass_id", "mg_generation_id", "mg_parent_id", "mg_step_no",
                "mg_step_type", "mg_provider", "mg_model", "mg_latency_ms", "mg_payload", "mg_status",
                "mg_source_system", "mg_created_at")


def _events(count: int) -> list[StepRecorded]:
    events = []
    generations = [uuid.uuid4().hex for _ in range(max(1, count // STEPS_PER_GENERATION))]
    for i in range(count):
        g = generations[i // STEPS_PER_GENERATION]
        events.append(StepRecorded(
            generation_id=g, pass_id=f"pass:anon:bench-proj:{i % CUSTOMERS}", step_no=i % STEPS_PER_GENERATION + 1,
            step_type="gpt_reader", phase=StepPhase.SUCCEEDED, provider="offline", model="offline-writer-1",
            latency_ms=12,
            payload={"input": {"userBrief": "a red glass bottle on a marble plinth", "style": "editorial"},
                     "output": {"clean_prompt": "Editorial still life of a red glass bottle, soft light " * 3},
                     "timing": {"started_at": "2025-12-19T10:00:00+00:00", "ended_at": "2025-12-19T10:00:00+00:00",
                                "duration_ms": 12}, "error": None},
        ))
    return events


async def _backlog(stack: Stack) -> int:
    info = await _consumer(stack)
    return int(info.num_pending + info.num_ack_pending)


async def _consumer(stack: Stack) -> Any:
    bus = await connect(stack.nats_url, "bench-proj-info")
    try:
        return await bus.js.consumer_info("MMA_EVENTS", "ledger")
    finally:
        await bus.close()


async def _publish(stack: Stack, events: list[StepRecorded]) -> float:
    bus = await connect(stack.nats_url, "bench-proj")
    try:
        started = time.perf_counter()
        for i in range(0, len(events), 512):
            await asyncio.gather(*(bus.publish(e) for e in events[i:i + 512]))
        return len(events) / (time.perf_counter() - started)
    finally:
        await bus.close()


def _rows(events: list[StepRecorded]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    at = datetime.now(UTC)
    customers = sorted({e.pass_id for e in events})
    gens = {e.generation_id: e.pass_id for e in events}
    return ([(c,) for c in customers], [(g, p, at) for g, p in gens.items()],
            [(e.generation_id, e.pass_id, e.step_no, e.step_type, e.provider, e.model, e.latency_ms, e.payload,
              "succeeded", at) for e in events])


async def _copy(conn: Any, customers: list[tuple[Any, ...]], gens: list[tuple[Any, ...]],
                steps: list[tuple[Any, ...]]) -> float:
    """Raw COPY of the same rows into emptied tables, 1,000 per transaction: rows/s."""
    await conn.set_type_codec("jsonb", schema="pg_catalog", format="binary",  # COPY speaks binary
                              encoder=lambda v: b"\x01" + orjson.dumps(v), decoder=lambda b: orjson.loads(b[1:]))
    await conn.execute("truncate mega_generations")
    await conn.execute("delete from mega_customers where mg_pass_id like 'pass:anon:bench-proj:%'")
    gen_rows = [(f"generation:{g}", "generation", p, g, "queued", "pending", "mma", at) for g, p, at in gens]
    step_rows = [(f"mma_step:{g}:{n}", "mma_step", p, g, f"generation:{g}", n, t, prov, model, lat, payload, st,
                  "mma", at) for g, p, n, t, prov, model, lat, payload, st, at in steps]
    started = time.perf_counter()
    async with conn.transaction():
        await conn.copy_records_to_table("mega_customers", columns=["mg_pass_id", "mg_credits", "mg_source_system",
                                                                    "mg_meta"],
                                         records=[(c, 0, "mma", {}) for (c,) in customers])
    for i in range(0, len(gen_rows), BATCH):
        async with conn.transaction():
            await conn.copy_records_to_table("mega_generations", columns=GEN_COLUMNS, records=gen_rows[i:i + BATCH])
    for i in range(0, len(step_rows), BATCH):
        async with conn.transaction():
            await conn.copy_records_to_table("mega_generations", columns=STEP_COLUMNS,
                                             records=step_rows[i:i + BATCH])
    return len(step_rows) / (time.perf_counter() - started)


async def _raw(stack: Stack, events: list[StepRecorded], loop_rows: int) -> tuple[float, float, float]:
    """(executemany rows/s, row-at-a-time rows/s, COPY rows/s) into a fresh migrated database."""
    admin = await asyncpg.connect(stack.dsn.rsplit("/", 1)[0] + "/postgres")
    name = f"bench_raw_{uuid.uuid4().hex[:8]}"
    await admin.execute(f"create database {name}")
    await admin.close()
    dsn = stack.dsn.rsplit("/", 1)[0] + f"/{name}"
    await apply_migrations(dsn)
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)
    try:
        customers, gens, steps = _rows(events)
        started = time.perf_counter()
        async with conn.transaction():
            await conn.executemany(q.ENSURE_CUSTOMER, customers)
        for i in range(0, len(gens), BATCH):
            async with conn.transaction():
                await conn.executemany(q.ENSURE_GENERATION, gens[i:i + BATCH])
        for i in range(0, len(steps), BATCH):
            async with conn.transaction():
                await conn.executemany(q.UPSERT_STEP, steps[i:i + BATCH])
        bulk = len(steps) / (time.perf_counter() - started)
        await conn.execute("truncate mega_generations")
        sample = steps[:loop_rows]
        started = time.perf_counter()
        for row in sample:
            await conn.execute(q.ENSURE_GENERATION, row[0], row[1], row[9])
            await conn.execute(q.UPSERT_STEP, *row)
        loop = len(sample) / (time.perf_counter() - started)
        copy = await _copy(conn, customers, gens, steps)
        return bulk, loop, copy
    finally:
        await conn.close()


async def _settle(stack: Stack, cap_s: float) -> int:
    """Wait until the ledger has projected what earlier figures left it (the in-flight round's last
    events), so the figure is its own backlog alone; what is still left at `cap_s` is returned."""
    t0 = time.monotonic()
    left = await _backlog(stack)
    while left and time.monotonic() - t0 < cap_s:
        await asyncio.sleep(0.25)
        left = await _backlog(stack)
    return left


async def run(stack: Stack, count: int, cap_s: float, out_dir: Path, do_profile: bool) -> tuple[Figure, Profile | None]:
    earlier = await _settle(stack, cap_s)
    stack.stop("ledger")
    events = _events(count)
    publish_rate = await _publish(stack, events)
    stack.start("ledger")
    t0 = time.monotonic()
    n0 = await _backlog(stack)
    remaining = n0
    while time.monotonic() - t0 < cap_s:
        await asyncio.sleep(0.25)
        remaining = await _backlog(stack)
        if remaining == 0:
            break
    elapsed = time.monotonic() - t0
    projected = n0 - remaining
    rate = projected / elapsed
    prof = None
    if do_profile:
        # the same backlog again, recorded while it drains (a fixed window would be mostly idle)
        stack.stop("ledger")
        await _publish(stack, _events(count))
        stack.start("ledger")
        recorder = Recorder("ledger (projection)", stack.pid("ledger"), max(1, int(elapsed)), out_dir, rate=250)
        prof = await asyncio.to_thread(recorder.result)
    bulk, loop, copy = await _raw(stack, events, min(5000, count))
    r = ratio(rate, bulk)
    met = r >= TARGET
    drained = "drained" if remaining == 0 else f"{remaining} left at the {cap_s:.0f}s cap"
    text = (f"{rate:,.0f} events/s ({projected:,} of a {n0:,}-event backlog in {elapsed:.1f}s, {drained}) vs raw "
            f"asyncpg executemany {bulk:,.0f} rows/s -> ratio {r:.2f} (target >= {TARGET}); raw COPY (plain "
            f"inserts, no upsert) {copy:,.0f} rows/s ({ratio(rate, copy):.2f}); row-at-a-time raw {loop:,.0f} rows/s "
            f"({ratio(rate, loop):.2f}); backlog published at {publish_rate:,.0f} msg/s"
            + (f"; {earlier:,} events of earlier figures still unprojected when it began" if earlier else ""))
    return Figure("ledger projection", text, met, "" if met else f"{r:.2f} of raw < {TARGET}"), prof
