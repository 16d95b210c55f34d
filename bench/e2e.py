"""End-to-end CPU per still generation (untargeted): POST -> `done`, every process, provider excluded.

`count` still creates through the gateway (8 at a time) with the pipeline running and the
offline provider at 0 ms; CPU (psutil user + system) of gateway, billing, ledger, pipeline,
nats-server and Postgres from before the first create to after the last `done` has been
projected, divided by the generations. The offline provider renders in the pipeline process:
the steps' `timing.provider_ms` (read afterwards, outside the measured window; wall time, so
close to its CPU only on a quiet box, and capped at the pipeline's share) is subtracted.
Printed beside the monolith's CPU per create of the accept figure, which runs no pipeline:
the difference is what running a generation costs on top of accepting it.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from bench.common import Figure, connect, pass_id
from bench.stack import Stack
from libs.schemas import BusMessage, GenerationDone, GenerationFailed, ListSteps, StepList

CONCURRENCY = 8
NAMES = ("gateway", "billing", "ledger", "pipeline", "nats-server", "postgres")


async def _projected(stack: Stack, cap_s: float = 30.0) -> None:
    bus = await connect(stack.nats_url, "bench-e2e-info")
    try:
        deadline = time.monotonic() + cap_s
        while time.monotonic() < deadline:
            info = await bus.js.consumer_info("MMA_EVENTS", "ledger")
            if info.num_pending + info.num_ack_pending == 0:
                return
            await asyncio.sleep(0.05)
    finally:
        await bus.close()


async def run(stack: Stack, count: int, monolith_cpu_ms: float | None) -> Figure:
    bus = await connect(stack.nats_url, "bench-e2e")
    ended: dict[str, asyncio.Future[BusMessage]] = {}
    loop = asyncio.get_running_loop()

    def on_end(msg: BusMessage) -> None:  # runs in the connection's reader (libs/bus/inline.py)
        if isinstance(msg, GenerationDone | GenerationFailed):
            future = ended.setdefault(msg.generation_id, loop.create_future())
            if not future.done():
                future.set_result(msg)

    await bus.listen("mma.evt.*.done", on_end)
    await bus.listen("mma.evt.*.failed", on_end)
    ids: list[str] = []
    failed = 0
    try:
        async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60) as client:
            sem = asyncio.Semaphore(CONCURRENCY)

            async def one(i: int) -> None:
                nonlocal failed
                async with sem:
                    response = await client.post("/mma/still/create", json={
                        "passId": pass_id(i % 100), "inputs": {"userBrief": "a red glass bottle on marble"}})
                    response.raise_for_status()
                    gid = response.json()["generation_id"]
                    ids.append(gid)
                    msg = await asyncio.wait_for(ended.setdefault(gid, loop.create_future()), 60)
                    failed += isinstance(msg, GenerationFailed)

            await asyncio.gather(*(one(i) for i in range(4)))  # warm-up
            await _projected(stack)
            ids.clear()
            failed = 0
            before = stack.cpu_seconds()
            started = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(count)))
            wall = time.perf_counter() - started
            await _projected(stack)
            after = stack.cpu_seconds()
        provider_ms = 0.0
        for gid in ids:
            steps = await bus.request(ListSteps(generation_id=gid), StepList)
            provider_ms += sum(float(s.payload.get("timing", {}).get("provider_ms") or 0) for s in steps.steps)
    finally:
        await bus.close()
    n = max(1, len(ids))
    per = {name: 1000 * (after[name] - before[name]) / n for name in NAMES if name in before and name in after}
    provider = min(provider_ms / n, per.get("pipeline", 0.0))  # wall time: at most what the pipeline spent
    total = sum(per.values())
    split = ", ".join(f"{name} {ms:.2f}" for name, ms in per.items())
    beside = (f"; the monolith's accept alone {monolith_cpu_ms:.2f} ms per create (it runs no pipeline)"
              if monolith_cpu_ms is not None else "")
    text = (f"{total - provider:.2f} ms CPU per still generation without the provider, POST -> done, all processes "
            f"({split} = {total:.2f}, less the offline provider's {provider:.1f} ms per generation inside the "
            f"pipeline), n={n}, {failed} failed, {n / wall:.1f} generations/s with {CONCURRENCY} at a time{beside}")
    return Figure("end-to-end CPU", text)
