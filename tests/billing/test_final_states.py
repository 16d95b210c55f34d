"""Final states are final: the first end in the stream stays (ledger, GET, SSE) and decides the refund.

The test publishes the ends a pipeline, the sweeper or a duplicate delivery would, in the
order each race produces them, against the real ledger, billing and gateway processes.
"""

from __future__ import annotations

from typing import Any

import httpx

from libs.bus import Bus
from libs.schemas import (
    TYPE_HEADER,
    CancelRequested,
    GenerationAccepted,
    GenerationDone,
    GenerationFailed,
    MmaStatus,
)
from tests.billing.support import balance_of, command, credit_rows, events_of, give_credits, new_pass, next_event
from tests.conftest import Services
from tests.gateway.support import read_sse
from tests.helpers import wait_for


def logged(services: Services, event: str, generation_id: str) -> list[dict[str, Any]]:
    return [e for p in services.procs for e in p.log_lines()
            if e.get("event") == event and e.get("generation_id") == generation_id]


async def accepted(bus: Bus, pass_id: str) -> str:
    cmd = command(pass_id, "still_create")
    await bus.publish(cmd)
    assert isinstance(await next_event(bus, cmd.generation_id, {"accepted", "rejected"}), GenerationAccepted)
    return cmd.generation_id


def done(generation_id: str, pass_id: str) -> GenerationDone:
    return GenerationDone(generation_id=generation_id, pass_id=pass_id, vars={"outputs": {}},
                          output_url="http://assets.local/out.png", content_type="image")


def failed(generation_id: str, pass_id: str, code: str = "STUCK_TIMEOUT",
           status: MmaStatus = MmaStatus.ERROR) -> GenerationFailed:
    return GenerationFailed(generation_id=generation_id, pass_id=pass_id, code=code, message=f"{code} happened",
                            status=status, detail={"category": "TIMEOUT"})


async def publish_again(bus: Bus, msg: GenerationFailed, msg_id: str) -> None:
    """The same event under another msg id: a duplicate the server's dedupe window does not catch."""
    await bus.js.publish(msg.subject(), msg.model_dump_json().encode(),
                         headers={TYPE_HEADER: type(msg).__name__, "Nats-Msg-Id": msg_id})


async def projected(db: Any, generation_id: str) -> str | None:
    status = await db.fetchval("select mg_mma_status from mega_generations where mg_id = $1",
                               f"generation:{generation_id}")
    return str(status) if status else None


async def test_a_late_failed_after_done_changes_nothing(services: Services, bus: Bus, db) -> None:
    """done, then a late failed: the ledger, GET and SSE stay done, billing refunds nothing."""
    for name in ("ledger", "billing", "gateway"):
        await services.start(name)
    pass_id = new_pass()
    await give_credits(bus, pass_id, 2)
    gid = await accepted(bus, pass_id)
    await bus.publish(done(gid, pass_id))
    await wait_for(lambda: projected(db, gid), 15, what="the ledger to project done")
    await bus.publish(failed(gid, pass_id))

    await wait_for(lambda: logged(services, "ledger.late_end_ignored", gid), 15, what="the ledger to ignore it")
    await wait_for(lambda: [e for e in logged(services, "billing.refund_skipped", gid)
                            if e.get("reason") == "ended_done"], 15, what="billing to skip the refund")
    assert await projected(db, gid) == "done"
    assert [r["mg_delta"] for r in await credit_rows(db, pass_id)] == [2, -1]
    assert await balance_of(db, pass_id) == 1
    assert await events_of(bus, gid, "refunded") == []
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30) as client:
        view = (await client.get(f"/mma/generations/{gid}")).json()
        assert view["state"] == "done" and view["error"] is None
        sse = await read_sse(client, f"/mma/stream/{gid}", timeout=15)
        assert sse.events[-1].event == "done" and "error" not in [e.event for e in sse.events]
        again = await read_sse(client, f"/mma/stream/{gid}", timeout=15,
                               headers={"Last-Event-ID": str(sse.events[-1].id)})
        assert again.events == []  # a reconnect after the end hears nothing, not the late failure


async def test_a_duplicate_failed_refunds_once_and_the_first_failure_stays(services: Services, bus: Bus,
                                                                          db) -> None:
    """failed twice (the second a different failure under another msg id): one refund, the first error shown."""
    for name in ("ledger", "billing", "gateway"):
        await services.start(name)
    pass_id = new_pass()
    await give_credits(bus, pass_id, 2)
    gid = await accepted(bus, pass_id)
    first = failed(gid, pass_id, code="SEEDREAM_TIMEOUT")
    await bus.publish(first)
    await publish_again(bus, first, f"dup-1:{gid}")
    await publish_again(bus, failed(gid, pass_id, code="CANCELLED", status=MmaStatus.CANCELLED), f"dup-2:{gid}")
    await wait_for(lambda: len(logged(services, "ledger.late_end_ignored", gid)) >= 1, 15,
                   what="the ledger to ignore the other failure")

    async def refunds_handled() -> bool:
        handled = logged(services, "billing.refund_applied", gid)
        return len(handled) == 3

    await wait_for(refunds_handled, 20, what="billing to handle the three failed events")
    rows = [r["mg_delta"] for r in await credit_rows(db, pass_id)]
    assert sorted(rows) == [-1, 1, 2]
    assert await balance_of(db, pass_id) == 2
    assert await projected(db, gid) == "error"
    assert await db.fetchval("select mg_error from mega_generations where mg_id = $1",
                             f"generation:{gid}") == "SEEDREAM_TIMEOUT happened"
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30) as client:
        view = (await client.get(f"/mma/generations/{gid}")).json()
    assert view["state"] == "error" and view["error"]["code"] == "SEEDREAM_TIMEOUT"


async def test_a_run_that_ends_done_while_the_sweeper_cancels_it_stays_done(services: Services, bus: Bus,
                                                                            db) -> None:
    """The sweeper asks a stuck run to stop and the run answers done in that instant: no failure, no refund."""
    await services.start("ledger")
    billing = await services.start("billing", stuck_after_s=1, sweep_interval_s=0.3, sweep_cancel_wait_s=20)
    pass_id = new_pass()
    await give_credits(bus, pass_id, 2)
    gid = await accepted(bus, pass_id)

    cancel = await next_event(bus, gid, {"cancel_requested"}, timeout=30)  # the sweep started
    assert isinstance(cancel, CancelRequested) and cancel.requested_by == "sweeper"
    await bus.publish(done(gid, pass_id))  # the run finishing right then

    await wait_for(lambda: logged(services, "billing.generation_swept", gid), 25, what="the sweep to finish")
    assert logged(services, "billing.generation_swept", gid)[-1]["outcome"] == "run_cancelled"
    await wait_for(lambda: projected(db, gid), 15, what="the ledger to project done")
    seen = sum(1 for e in billing.log_lines() if e.get("event") == "billing.sweep_done")
    await wait_for(lambda: sum(1 for e in billing.log_lines() if e.get("event") == "billing.sweep_done") >= seen + 3,
                   20, what="three more sweeps")
    assert await events_of(bus, gid, "failed") == []
    assert await projected(db, gid) == "done"
    assert [r["mg_delta"] for r in await credit_rows(db, pass_id)] == [2, -1]
