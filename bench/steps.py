"""Step overhead: still creates one after the other with the provider at 0 ms, per step.

Judged: the pipeline's part, from the generation's `accepted` event (billing publishes it just
before the job) to its `done` event, both timed by the NATS server as it stored them, without
provider time, divided by the steps. The offline provider's own work (rendering the still,
reading images for the scans) stands in for provider time: each step records it as
`timing.provider_ms`. Printed beside it: request -> SSE `done` per step (it adds the accept path,
gateway -> billing -> ledger, which the accept figure measures, and the SSE delivery) and what one
step at least costs in this architecture, one JetStream publish plus one asyncpg upsert awaited
one after the other.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import httpx
import orjson

from bench.common import Figure, connect, pass_id, pct
from bench.stack import Stack
from libs.schemas import ListSteps, StepList, Stream


async def _one(client: httpx.AsyncClient, i: int) -> tuple[float, str]:
    body = {"passId": pass_id(i % 100), "inputs": {"userBrief": "a red glass bottle on a marble plinth"}}
    started = time.perf_counter()
    response = await client.post("/mma/still/create", json=body)
    response.raise_for_status()
    generation_id = response.json()["generation_id"]
    async with client.stream("GET", f"/mma/stream/{generation_id}") as stream:
        event = ""
        async for line in stream.aiter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and event in ("done", "error"):
                if event == "error":
                    raise RuntimeError(f"generation {generation_id} failed: {line}")
                return time.perf_counter() - started, generation_id
    raise RuntimeError(f"stream of {generation_id} ended without done")


async def _steps(bus: object, generation_id: str, deadline_s: float = 10.0) -> StepList:
    from libs.bus import Bus

    assert isinstance(bus, Bus)
    deadline = time.monotonic() + deadline_s
    while True:
        steps = await bus.request(ListSteps(generation_id=generation_id), StepList)
        if steps.steps and all(s.status == "succeeded" for s in steps.steps) and len(steps.steps) >= 4:
            return steps
        if time.monotonic() > deadline:
            return steps
        await asyncio.sleep(0.05)


async def _pipeline_s(bus: object, generation_id: str) -> float:
    """Server time from the generation's `accepted` event to its `done` event."""
    from libs.bus import Bus

    assert isinstance(bus, Bus)
    accepted, done = await asyncio.gather(*(bus.js.get_last_msg(Stream.EVENTS.value, f"mma.evt.{generation_id}.{k}")
                                            for k in ("accepted", "done")))
    assert accepted.time is not None and done.time is not None
    return (done.time - accepted.time).total_seconds()


async def _baseline(stack: Stack, count: int) -> list[float]:
    bus = await connect(stack.nats_url, "bench-steps-base")
    conn = await asyncpg.connect(stack.dsn)
    try:
        from nats.js import api

        await bus.js.add_stream(api.StreamConfig(name="BENCH_RAW", subjects=["bench.raw.>"],
                                                 storage=api.StorageType.FILE))
        await conn.execute("create table if not exists bench_upsert (id text primary key, payload jsonb, "
                           "updated_at timestamptz default now())")
        payload = orjson.dumps({"input": {"prompt": "x" * 300}, "output": {"text": "y" * 300},
                                "timing": {"duration_ms": 1}, "error": None})
        text = payload.decode()
        times = []
        for i in range(count):
            started = time.perf_counter()
            await bus.js.publish(f"bench.raw.{i}", payload, headers={"Nats-Msg-Id": f"raw:{i}"})
            await conn.execute("insert into bench_upsert (id, payload) values ($1, $2::jsonb) on conflict (id) do "
                               "update set payload = excluded.payload, updated_at = now()", f"step:{i % 500}", text)
            times.append(time.perf_counter() - started)
        await bus.js.delete_stream("BENCH_RAW")
        return times
    finally:
        await conn.close()
        await bus.close()


async def run(stack: Stack, count: int) -> Figure:
    base = await _baseline(stack, max(200, count * 10))
    bus = await connect(stack.nats_url, "bench-steps")
    totals, per_step, net_per_step, step_counts, provider, own = [], [], [], [], [], []
    try:
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30) as client:
            await _one(client, 0)  # warm-up (config seeded, connections open)
            for i in range(count):
                total, generation_id = await _one(client, i + 1)
                steps = await _steps(bus, generation_id)
                n = max(1, len(steps.steps))
                provider_ms = sum(float(s.payload.get("timing", {}).get("provider_ms") or 0) for s in steps.steps)
                totals.append(total)
                provider.append(provider_ms)
                step_counts.append(n)
                per_step.append(total / n)
                net_per_step.append(max(0.0, total - provider_ms / 1000) / n)
                own.append(max(0.0, await _pipeline_s(bus, generation_id) - provider_ms / 1000) / n)
    finally:
        await bus.close()
    b50, b99 = pct(base, 50) * 1000, pct(base, 99) * 1000
    p50, p99 = pct(per_step, 50) * 1000, pct(per_step, 99) * 1000
    n50, n99 = pct(net_per_step, 50) * 1000, pct(net_per_step, 99) * 1000
    o50, o99 = pct(own, 50) * 1000, pct(own, 99) * 1000
    met = o50 <= 3 and o99 < 20
    why = []
    if not o50 <= 3:
        why.append(f"p50 {o50:.2f} ms > 3")
    if not o99 < 20:
        why.append(f"p99 {o99:.1f} ms >= 20")
    steps_txt = "/".join(str(s) for s in sorted(set(step_counts)))
    text = (f"pipeline per step p50 {o50:.2f} ms p99 {o99:.2f} ms without provider time (job accepted -> done "
            f"event, server times; provider p50 {pct(provider, 50):.0f} ms per create; {steps_txt} steps, "
            f"n={count}); request -> SSE done per step p50 {n50:.1f} ms p99 {n99:.1f} ms without provider "
            f"time (with it: p50 {p50:.1f} / p99 {p99:.1f} ms; p50 {pct(totals, 50) * 1000:.0f} ms per create, "
            f"the accept path and SSE included); one publish+upsert p50 {b50:.2f} ms p99 {b99:.2f} ms "
            f"(target: pipeline p50 <= 3 ms, p99 < 20 ms)")
    return Figure("step overhead", text, met, ", ".join(why))
