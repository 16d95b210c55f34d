"""Credit applies: concurrent debits across 100 customers through the ledger's RPC, vs the same SQL raw.

Both sides run the ledger's own statement (services/ledger/credit_queries.py CREDIT_APPLY: the
`mega_credit_apply` function, one transaction per debit) with the same concurrency and the
ledger's pool size; the product adds the NATS request/reply and the ledger's Python.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg

from bench.common import Figure, connect, pass_id, pct, ratio
from bench.stack import Stack
from libs.schemas import CreditApplied, CreditApply, CreditOutcome
from services.ledger import credit_queries as cq

CUSTOMERS = 100
CONCURRENCY = 64
POOL = 10  # MMA_DB_POOL_MAX default: the ledger's pool
TARGET = 0.8


_offset = [0]  # every call gets refs never used before (a reused ref is a cheap no-op)


async def _drive(call: object, duration_s: float, limit: int) -> tuple[int, list[float], float, float]:
    """Run `call(i)` from CONCURRENCY workers until time or count is up: (done, latencies, wall, cpu)."""
    done = 0
    latencies: list[float] = []
    stop_at = time.monotonic() + duration_s
    counter = iter(range(_offset[0], _offset[0] + limit))
    _offset[0] += limit

    async def worker() -> None:
        nonlocal done
        for i in counter:
            if time.monotonic() > stop_at:
                return
            started = time.perf_counter()
            await call(i)  # type: ignore[operator]
            latencies.append(time.perf_counter() - started)
            done += 1

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return done, latencies, time.perf_counter() - wall0, time.process_time() - cpu0


async def run(stack: Stack, duration_s: float, limit: int) -> Figure:
    run_id = uuid.uuid4().hex[:8]
    bus = await connect(stack.nats_url, "bench-credits")
    insufficient = 0

    async def via_ledger(i: int) -> None:
        nonlocal insufficient
        reply = await bus.request(CreditApply(
            pass_id=pass_id(i % CUSTOMERS), delta=-1, ref=f"bench:debit:{run_id}:{i}", reason="bench",
        ), CreditApplied, timeout=30)
        if reply.outcome is not CreditOutcome.APPLIED:
            insufficient += 1

    try:
        await _drive(via_ledger, 1.0, limit)  # warm-up
        n, lat, wall, cpu = await _drive(via_ledger, duration_s, limit)
    finally:
        await bus.close()

    pool = await asyncpg.create_pool(stack.dsn, min_size=POOL, max_size=POOL)

    async def raw(i: int) -> None:
        ref = f"bench:raw:{run_id}:{i}"
        who = pass_id(i % CUSTOMERS)
        async with pool.acquire() as conn:
            await conn.fetchrow(cq.CREDIT_APPLY, ref, who, None, -1, "bench", "mma", "bench", ref, None)

    try:
        await _drive(raw, 1.0, limit)
        bn, blat, bwall, _ = await _drive(raw, duration_s, limit)
    finally:
        await pool.close()
    rps, brps = n / wall, bn / bwall
    r = ratio(rps, brps)
    met = r >= TARGET and insufficient == 0
    why = f"{r:.2f} of raw < {TARGET}" if r < TARGET else (f"{insufficient} not applied" if insufficient else "")
    text = (f"{rps:,.0f} debits/s p50 {pct(lat, 50) * 1000:.1f} ms p99 {pct(lat, 99) * 1000:.1f} ms "
            f"({n} applied, {CONCURRENCY} in flight, {CUSTOMERS} customers) vs raw asyncpg (pool {POOL}) "
            f"{brps:,.0f}/s p99 {pct(blat, 99) * 1000:.1f} ms -> ratio {r:.2f} (target >= {TARGET}); "
            f"client CPU {100 * cpu / wall:.0f}%")
    return Figure("credit applies", text, met, why)
