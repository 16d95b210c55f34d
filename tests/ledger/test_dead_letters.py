"""A row Postgres refuses is never lost: kept, shown in /ops, counted by reconcile, replayed once fixed.

The real ledger and gateway run as processes on a real NATS and Postgres; Postgres is made to
refuse rows with temporary CHECK constraints, as the production tables' record-type CHECKs did.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import httpx

from libs.bus import Bus
from libs.schemas import Reconcile, ReconcileReport, SessionStarted
from tests.conftest import ADMIN_TOKEN, ROOT, Services
from tests.helpers import wait_for
from tests.ledger.conftest import snapshot

PASS = "pass:email:dead@example.com"
REFUSE_SESSION = "alter table mega_generations add constraint test_refuse check (mg_id <> 'session:refused') not valid"
REFUSE_REPORTS = "alter table mega_admin add constraint test_refuse check (mg_id not like 'error:dlq:%') not valid"


async def run_tool(services: Services, *args: str) -> tuple[int, str]:
    """`python -m services.ledger <args>` with the test's settings; (exit code, stdout)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.ledger", *args, cwd=ROOT, env=services.env(),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode is not None
    return proc.returncode, out.decode() + err.decode()[-3000:]


async def ops_dead_letters(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/ops/api/dead-letters")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def rows(pool: Any, sql: str, *args: Any) -> list[Any]:
    async with pool.acquire() as conn:
        return list(await conn.fetch(sql, *args))


async def test_a_refused_row_is_kept_shown_counted_and_replayed_once(
    services: Services, bus: Bus, pool: Any
) -> None:
    """Refused session row and refused error row wait in the stream; after the fix replay-dead writes each once."""
    async with pool.acquire() as conn:
        await conn.execute(REFUSE_SESSION)
        await conn.execute(REFUSE_REPORTS)
    ledger = await services.start("ledger")
    await services.start("gateway")
    await bus.publish(SessionStarted(session_id="refused", pass_id=PASS))
    await bus.publish(SessionStarted(session_id="fine", pass_id=PASS))

    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30.0,
                                 headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as http:
        shown = await wait_for(lambda: _waiting(http, 2), 30, what="both dead letters shown in /ops")
        assert shown["by_consumer"] == {"ledger": 2}
        original, report = shown["dead_letters"]
        assert original["subject"] == "mma.evt.cust.session.refused" and original["type"] == "SessionStarted"
        assert "refused by Postgres" in original["reason"] and "test_refuse" in original["reason"]
        assert report["subject"] == "mma.evt.ops.dead_letter" and report["type"] == "DeadLettered"
        assert await rows(pool, "select 1 from mega_generations where mg_id = 'session:fine'")
        assert any(e.get("event") == "bus.dead_letter_record_refused" for e in ledger.log_lines())

        before = await bus.request(Reconcile(), ReconcileReport)
        assert before.checks["dead_letters_waiting"] == 2 and not before.ok
        code, out = await run_tool(services, "reconcile")
        assert code == 1 and "dead_letters_waiting: 2" in out

        code, out = await run_tool(services, "replay-dead")  # the cause is not fixed yet: both stay
        assert code == 1 and "0 replayed" in out and "2 failed" in out
        async with pool.acquire() as conn:
            await conn.execute("alter table mega_generations drop constraint test_refuse")
            await conn.execute("alter table mega_admin drop constraint test_refuse")
        code, out = await run_tool(services, "replay-dead", "--dry-run")
        assert code == 0 and "2 listed" in out
        assert (await ops_dead_letters(http))["waiting"] == 2

        code, out = await run_tool(services, "replay-dead")
        assert code == 0 and "2 replayed, 0 discarded, 0 failed" in out, out
        assert (await ops_dead_letters(http))["waiting"] == 0

    sessions = await rows(pool, "select * from mega_generations where mg_session_id = 'refused'")
    assert [(s["mg_id"], s["mg_pass_id"]) for s in sessions] == [("session:refused", PASS)]
    [error] = await rows(pool, "select * from mega_admin where mg_id = $1", original["record_id"])
    assert error["mg_record_type"] == "error" and error["mg_detail"]["consumer"] == "ledger"
    assert error["mg_detail"]["original_subject"] == "mma.evt.cust.session.refused"
    assert error["mg_detail"]["dead_letter"]["seq"] == original["seq"] and error["mg_detail"].get("replayed_at")
    after = await bus.request(Reconcile(), ReconcileReport)
    assert after.checks["dead_letters_waiting"] == 0 and after.ok, after.breaches

    settled = await snapshot(pool)
    code, out = await run_tool(services, "replay-dead")
    assert code == 0 and "0 replayed" in out
    assert await snapshot(pool) == settled


async def _waiting(http: httpx.AsyncClient, n: int) -> dict[str, Any] | None:
    body = await ops_dead_letters(http)
    return body if body["waiting"] >= n else None
