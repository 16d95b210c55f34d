"""Two ends of one generation projected out of stream order: the ledger keeps the stream's first end."""

from __future__ import annotations

from typing import Any

from libs.bus import Bus
from libs.schemas import GenerationDone, GenerationFailed, new_id
from services.ledger.deps import LedgerDeps
from services.ledger.handlers import EVENT_HANDLERS

PASS = "pass:anon:ends"


def ends(gid: str) -> tuple[GenerationDone, GenerationFailed]:
    return (GenerationDone(generation_id=gid, pass_id=PASS, vars={}, output_url="https://a/o.png"),
            GenerationFailed(generation_id=gid, pass_id=PASS, code="STUCK_TIMEOUT", message="too long"))


async def row(pool: Any, gid: str) -> tuple[str, str, str | None]:
    async with pool.acquire() as conn:
        found = await conn.fetchrow("select mg_mma_status, mg_status, mg_error from mega_generations where mg_id = $1",
                                    f"generation:{gid}")
    return found["mg_mma_status"], found["mg_status"], found["mg_error"]


async def project(msg: GenerationDone | GenerationFailed, deps: LedgerDeps) -> None:
    await EVENT_HANDLERS[type(msg)](msg, deps)


async def test_done_first_in_the_stream_wins_over_a_failure_projected_before_it(pool: Any, bus: Bus) -> None:
    """Stream: done, then failed; projected failed first (a redelivery): the row ends done, no error kept."""
    deps = LedgerDeps(pool=pool, settings=bus.settings, bus=bus)
    gid = new_id()
    done, failed = ends(gid)
    await bus.publish(done)
    await bus.publish(failed)
    await project(failed, deps)
    assert await row(pool, gid) == ("error", "failed", "too long")
    await project(done, deps)
    assert await row(pool, gid) == ("done", "succeeded", None)
    await project(failed, deps)  # redelivered again, late: nothing changes
    assert await row(pool, gid) == ("done", "succeeded", None)


async def test_a_failure_first_in_the_stream_stays_when_done_was_projected_before_it(pool: Any, bus: Bus) -> None:
    """Stream: failed, then done; projected done first: the failure replaces it, a replayed done changes nothing."""
    deps = LedgerDeps(pool=pool, settings=bus.settings, bus=bus)
    gid = new_id()
    done, failed = ends(gid)
    await bus.publish(failed)
    await bus.publish(done)
    await project(done, deps)
    assert (await row(pool, gid))[0] == "done"
    await project(failed, deps)
    assert await row(pool, gid) == ("error", "failed", "too long")
    await project(done, deps)
    assert await row(pool, gid) == ("error", "failed", "too long")
