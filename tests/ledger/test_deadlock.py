"""Two ledgers' batches that lock the same rows in turn: the deadlock victim is run again at once."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import asyncpg

from libs.schemas import GenerationAccepted, GenerationDone, MmaStatus, StatusChanged
from services.ledger.deps import LedgerDeps
from services.ledger.handlers import project_batch
from tests.helpers import wait_for
from tests.ledger.events import at, every_event

PASS = "pass:user:33333333-3333-3333-3333-333333333333"
LOCK = ("update mega_generations set mg_updated_at = now() "
        "where mg_generation_id = $1 and mg_record_type = 'generation'")


async def test_a_batch_chosen_as_deadlock_victim_is_projected_without_a_redelivery(deps: LedgerDeps,
                                                                                    pool: Any) -> None:
    x = next(e for e in every_event("dlx", PASS) if isinstance(e, GenerationAccepted))
    y = next(e for e in every_event("dly", PASS) if isinstance(e, GenerationAccepted))
    y_done = next(e for e in every_event("dly", PASS) if isinstance(e, GenerationDone))
    await project_batch([x, y], deps)
    # the batch moves x (a set-based statement), then applies y's done alone: it locks x, then y
    batch = [StatusChanged(generation_id=x.generation_id, pass_id=PASS, status=MmaStatus.SCANNING, at=at(50)),
             y_done]

    async with pool.acquire() as other:  # the other ledger's transaction: y first, then x
        tx = other.transaction()
        await tx.start()
        await other.execute(LOCK, y.generation_id)
        projecting = asyncio.create_task(project_batch(batch, deps))

        async def batch_waits_for_y() -> bool:
            async with pool.acquire() as watcher:  # not `other`: a transaction sees one snapshot of the stats
                waiting = await watcher.fetchval("select count(*) from pg_stat_activity where wait_event_type = 'Lock'")
            return bool(waiting)

        await wait_for(batch_waits_for_y, 10, what="the batch holding x and waiting for y")
        # closes the cycle; the batch waited first, so its deadlock check runs first and it is the victim
        with contextlib.suppress(asyncpg.DeadlockDetectedError):
            await other.execute(LOCK, x.generation_id)
        await tx.rollback()
        await asyncio.wait_for(projecting, 15)  # no ServiceUnavailableError: the batch ran again

    async with pool.acquire() as conn:
        status = dict(await conn.fetch(
            "select mg_generation_id, mg_mma_status from mega_generations "
            "where mg_record_type = 'generation' and mg_generation_id = any($1::text[])",
            [x.generation_id, y.generation_id]))
    assert status == {x.generation_id: "scanning", y.generation_id: "done"}
