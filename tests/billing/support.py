"""Helpers of the billing tests: seeding credits, building commands, reading events and rows."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import nats.js.errors

from libs.bus import Bus
from libs.schemas import (
    BusMessage,
    CreditApplied,
    CreditApply,
    CustomerView,
    EnsureCustomer,
    Flow,
    GenerationJob,
    GenerationRequest,
    GenerationRequested,
    Inputs,
    Stream,
    generation_events,
    new_id,
)


async def give_credits(bus: Bus, pass_id: str, amount: int) -> int:
    """Seed a customer's balance straight through the ledger (not through billing)."""
    await bus.request(EnsureCustomer(pass_id=pass_id), CustomerView)
    applied = await bus.request(
        CreditApply(pass_id=pass_id, delta=amount, ref=f"seed:{new_id()}", reason="test_seed", source="test"),
        CreditApplied,
    )
    return applied.balance


def command(pass_id: str, flow: str = "still_create", **fields: Any) -> GenerationRequested:
    suggest_only = bool(fields.pop("suggest_only", False))
    return GenerationRequested(
        generation_id=new_id(), pass_id=pass_id, flow=Flow(flow),
        request=GenerationRequest(inputs=Inputs(user_brief="a bottle on sand", suggest_only=suggest_only)),
        request_id=f"req-{new_id()[:8]}", **fields,
    )


def new_pass() -> str:
    return f"pass:anon:{new_id()}"


async def next_event(bus: Bus, generation_id: str, kinds: set[str], timeout: float = 15.0) -> BusMessage:
    """The first event of `generation_id` whose kind is in `kinds` (replayed from the start)."""
    async with asyncio.timeout(timeout):
        async for _seq, msg in bus.follow(generation_events(generation_id)):
            if getattr(msg, "kind", None) in kinds:
                return msg
    raise AssertionError("unreachable")


async def events_of(bus: Bus, generation_id: str, kind: str) -> list[BusMessage]:
    """Every `kind` event of `generation_id` now in the EVENTS stream."""
    found: list[BusMessage] = []
    last = await bus.last_seq(generation_events(generation_id))
    if last == 0:
        return found
    async with asyncio.timeout(10):
        async for seq, msg in bus.follow(generation_events(generation_id)):
            if getattr(msg, "kind", None) == kind:
                found.append(msg)
            if seq >= last:
                break
    return found


async def job_of(bus: Bus, generation_id: str) -> GenerationJob | None:
    """The job waiting on the JOBS stream for this generation, or None."""
    try:
        raw = await bus.js.get_last_msg(Stream.JOBS.value, f"mma.job.{generation_id}")
    except nats.js.errors.NotFoundError:
        return None
    return GenerationJob.model_validate_json(raw.data or b"{}")


async def credit_rows(db: asyncpg.Connection, pass_id: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await db.fetch(
        "select mg_delta, mg_reason, mg_source, mg_ref_type, mg_ref_id, mg_generation_id from mega_generations"
        " where mg_record_type = 'credit_transaction' and mg_pass_id = $1 and mg_deleted_at is null"
        " order by mg_created_at",
        pass_id,
    )
    return rows


async def balance_of(db: asyncpg.Connection, pass_id: str) -> int:
    return int(await db.fetchval("select mg_credits from mega_customers where mg_pass_id = $1", pass_id) or 0)

