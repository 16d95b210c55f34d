"""Wiring: the pool, migrations, every `mma.rpc.ledger.*` handler and the projection consumer."""

from __future__ import annotations

import asyncpg
import structlog

from libs.errors import ServiceUnavailableError
from libs.schemas import EVENT_TYPES, EVENTS_ALL, CreditApply, Stream
from libs.service import ServiceContext
from services.ledger.adapters.pg import create_pool, db_unavailable_is_retryable
from services.ledger.deps import LedgerDeps
from services.ledger.handlers import EVENT_HANDLERS, project_batch
from services.ledger.migrate import apply_migrations
from services.ledger.rpc import RPC_HANDLERS

log = structlog.get_logger("ledger")

RPC_QUEUE = "ledger"
DURABLE = "ledger"
# Events per projection transaction. A backlog drains at about the rate the ledger's one event
# loop fetches, decodes and acks; per batch there is also a pull request, a transaction (its
# commit waits for the WAL fsync) and a statement per statement group: 2,000 makes those a
# quarter of what 500 did (docs/bench.md).
BATCH = 2000
# Under load (each batch a few events: the next ones come while a batch is written), a batch waits
# this long from its first event to fill: about 2 ms of CPU in the ledger and 2 in Postgres per
# batch were spent on 11 events at 750 creates/s, on 35 with the wait (docs/bench.md, session 14).
PROJECTION_FILL_S = 0.025
GROUPED = 256  # CreditApply requests in hand at once (services/ledger/credit_queue.py)


async def setup(ctx: ServiceContext) -> None:
    """Register everything; the projection consumer waits out a database outage.

    A database outage must never drop an event: handlers raise ServiceUnavailableError, the
    bus naks with a delay (without bound), and the event is projected once Postgres answers
    again. A row Postgres refuses is dead-lettered at once, a bug after `max_deliveries`.
    """
    if not ctx.database_url:
        raise SystemExit("No database URL: set MMA_DATABASE_URL or start the embedded stack with `make up`.")
    applied = await apply_migrations(ctx.database_url)
    if applied:
        log.info("ledger.migrations_applied", migrations=applied)
    pool = await create_pool(ctx.database_url, ctx.settings.db_pool_min, ctx.settings.db_pool_max)
    ctx.stack.push_async_callback(pool.close)
    deps = LedgerDeps(pool=pool, settings=ctx.settings, js=ctx.bus.js, bus=ctx.bus)

    async def database_ready() -> bool:
        try:
            async with pool.acquire(timeout=2) as conn:
                return bool(await conn.fetchval("select 1") == 1)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ServiceUnavailableError):
            return False

    ctx.ready_checks.append(database_ready)
    missing = set(EVENT_TYPES.values()) - set(EVENT_HANDLERS)
    if missing:
        raise RuntimeError(f"no ledger handler for {sorted(m.__name__ for m in missing)}")
    for req_type, handler in RPC_HANDLERS.items():  # no more at once than the pool has connections
        # single credit applies wait in the credit queue, not on a connection: many may wait together
        concurrency = GROUPED if req_type is CreditApply else ctx.settings.db_pool_max
        await ctx.bus.serve(req_type, db_unavailable_is_retryable(handler), deps, queue=RPC_QUEUE,
                            concurrency=concurrency)
    # in stream order, up to BATCH events per transaction; bad data falls back to one at a time
    # the bus gives the durable room for two batches (the one in hand, the one fetched meanwhile);
    # under load a batch waits up to PROJECTION_FILL_S to fill (fewer transactions for the same events)
    await ctx.bus.consume_batch(
        stream=Stream.EVENTS, durable=DURABLE, filter_subject=EVENTS_ALL, handlers=EVENT_HANDLERS,
        batch_handler=project_batch, deps=deps, batch=BATCH, retry_unavailable=True, fill_s=PROJECTION_FILL_S,
    )
    log.info("ledger.wired", rpcs=len(RPC_HANDLERS), event_types=len(EVENT_HANDLERS))

