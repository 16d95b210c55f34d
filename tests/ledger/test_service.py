"""The ledger as a real process on real NATS: replay, crash and restart, poison messages."""

from __future__ import annotations

from typing import Any

import asyncpg

from libs.bus import Bus
from libs.schemas import DEAD_LETTER_SUBJECT, TYPE_HEADER, BusMessage, CustomerEventRecorded, OpsLogged, SessionStarted
from tests.conftest import Services
from tests.helpers import wait_for
from tests.ledger.conftest import snapshot
from tests.ledger.events import every_event

PASS = "pass:email:svc@example.com"


async def publish_as_replay(bus: Bus, msg: BusMessage, suffix: str) -> None:
    """The same message under a different msg id, so JetStream's dedupe does not drop it."""
    headers = {"Nats-Msg-Id": f"{msg.msg_id()}#{suffix}", TYPE_HEADER: type(msg).__name__}
    await bus.publish_raw(msg.subject(), msg.model_dump_json().encode(), headers=headers)


async def admin_row(pool: Any, mg_id: str) -> Any:
    async with pool.acquire() as conn:
        return await conn.fetchrow("select * from mega_admin where mg_id = $1", mg_id)


def without(rows: dict[str, list[dict[str, Any]]], prefix: str) -> dict[str, list[dict[str, Any]]]:
    return {t: [r for r in rs if not str(r.get("mg_id", "")).startswith(prefix)] for t, rs in rows.items()}


async def test_replay_through_nats_leaves_the_same_rows(services: Services, bus: Bus, pool: Any) -> None:
    """Every event type published twice (different msg ids) projects to the same rows."""
    await services.start("ledger")
    events = every_event("n", PASS)
    for msg in events:
        await bus.publish(msg)
    await bus.publish(OpsLogged(log_id="sentinel-1", level="warn"))
    await wait_for(lambda: admin_row(pool, "warn:sentinel-1"), 20, what="first pass projected")
    first = without(await snapshot(pool), "warn:sentinel")

    for msg in events:
        await publish_as_replay(bus, msg, "replay")
    await bus.publish(OpsLogged(log_id="sentinel-2", level="warn"))
    await wait_for(lambda: admin_row(pool, "warn:sentinel-2"), 20, what="replay projected")
    assert without(await snapshot(pool), "warn:sentinel") == first
    assert len(first["mega_generations"]) == 9


async def test_killed_mid_stream_then_restarted_projects_everything_once(
    services: Services, bus: Bus, pool: Any
) -> None:
    """SIGKILL while projecting; events published while it is down land after the restart, once each."""
    proc = await services.start("ledger", ack_wait_s=2)

    def event(i: int) -> CustomerEventRecorded:
        return CustomerEventRecorded(event_id=f"k{i}", pass_id=PASS, event_type="like",
                                     tag_weight_deltas={"style.calm": 1.0})

    async def projected() -> int:
        async with pool.acquire() as conn:
            return int(await conn.fetchval(
                "select count(*) from mega_generations where mg_record_type = 'mma_event'"))

    async def projected_at_least(n: int) -> bool:
        return await projected() >= n

    async def projected_exactly(n: int) -> bool:
        return await projected() == n

    for i in range(600):
        await bus.publish(event(i))
    await wait_for(lambda: projected_at_least(50), 20, what="projection under way")
    proc.kill()
    in_flight = await projected()
    for i in range(600, 800):
        await bus.publish(event(i))
    await services.start("ledger", ack_wait_s=2)
    await wait_for(lambda: projected_exactly(800), 60, what="every event projected after restart")

    async with pool.acquire() as conn:
        prefs = await conn.fetchval("select mg_mma_preferences from mega_customers where mg_pass_id = $1", PASS)
    assert in_flight < 800
    assert prefs["tag_weights"] == {"style.calm": 800.0}


async def test_garbage_is_dead_lettered_and_the_stream_moves_on(services: Services, bus: Bus, pool: Any) -> None:
    """An undecodable event becomes a dead letter and an error row; the next good event is projected."""
    await services.start("ledger")
    await bus.publish_raw("mma.evt.garbage.done", b"{not json at all",
                          headers={TYPE_HEADER: "GenerationDone", "Nats-Msg-Id": "garbage-1"})
    await bus.publish_raw("mma.evt.garbage.mystery", b"\xff\xfe\x00 binary", headers={"Nats-Msg-Id": "garbage-2"})
    await bus.publish(SessionStarted(session_id="after-garbage", pass_id=PASS))

    async def rows() -> list[Any]:
        async with pool.acquire() as conn:
            return list(await conn.fetch(
                "select * from mega_admin where mg_record_type = 'error' "
                "and mg_detail->>'category' = 'INVALID_MESSAGE' order by mg_detail->>'original_subject'"))

    async def session() -> Any:
        async with pool.acquire() as conn:
            return await conn.fetchrow("select * from mega_generations where mg_id = 'session:after-garbage'")

    errors = await wait_for(lambda: _at_least(rows, 2), 20, what="two error rows")
    assert [e["mg_detail"]["original_subject"] for e in errors] == ["mma.evt.garbage.done", "mma.evt.garbage.mystery"]
    assert errors[0]["mg_detail"]["data"] == "{not json at all"
    assert errors[0]["mg_detail"]["emoji"] == "💥"
    assert await wait_for(session, 20, what="the next good event")
    assert await bus.last_seq(DEAD_LETTER_SUBJECT) > 0


async def _at_least(fetch: Any, n: int) -> Any:
    found = await fetch()
    return found if len(found) >= n else None


async def test_database_outage_delays_but_never_drops_events(
    services: Services, bus: Bus, pool: Any, pg: Any, database_url: str
) -> None:
    """Events published while the database refuses connections are projected once it is back."""
    await services.start("ledger")
    await bus.publish(SessionStarted(session_id="before-outage", pass_id=PASS))

    async def session(session_id: str) -> Any:
        async with pool.acquire() as conn:
            return await conn.fetchrow("select 1 from mega_generations where mg_id = $1", f"session:{session_id}")

    await wait_for(lambda: session("before-outage"), 20, what="projection before the outage")
    name = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(pg.dsn("postgres"))
    try:
        await admin.execute(f'alter database "{name}" with allow_connections false')
        await admin.execute("select pg_terminate_backend(pid) from pg_stat_activity "
                            "where datname = $1 and pid <> pg_backend_pid()", name)
        for i in range(5):
            await bus.publish(SessionStarted(session_id=f"during-outage-{i}", pass_id=PASS))
        await wait_for(lambda: _logged(services, "bus.message_nak"), 20, what="a nak while the database is away")
    finally:
        await admin.execute(f'alter database "{name}" with allow_connections true')
        await admin.close()
    for i in range(5):
        assert await wait_for(lambda i=i: session(f"during-outage-{i}"), 60, what=f"event {i} after the outage")


def _logged(services: Services, event: str) -> bool:
    return any(e.get("event") == event for p in services.procs for e in p.log_lines())
