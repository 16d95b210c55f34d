"""The product over the migrated production-shaped database: flows, money, admin, reads of old rows.

The happy path and the admin reads of tests/gateway run here unchanged (imported, so collected
again with this directory's `database_url`); the tests below check what only this database has.
"""

from __future__ import annotations

from typing import Any

import httpx

from libs.settings import Settings
from tests.conftest import Services
from tests.faults.support import WELCOME, Driver, ledger_caught_up, reconcile, settle_and_check
from tests.gateway.support import ADMIN, signed_in
from tests.gateway.test_flows import (
    create_and_watch,
    test_failed_tweak_parent_and_admin_reads,
    test_scripted_happy_path,
)
from tests.helpers import wait_for
from tests.production.support import BALANCES, LEGACY_GENERATIONS, all_rows, new_credit_rows

__all__ = ["test_failed_tweak_parent_and_admin_reads", "test_scripted_happy_path"]

OLD_USER = "pass:user:a1b2c3d4-0000-4000-8000-00000000aa01"


def as_customer(settings: Settings, pass_id: str) -> dict[str, str]:
    """The headers that prove `pass_id`: its own token, or (a Shopify id no user is linked to yet) the admin token."""
    if pass_id.startswith(("pass:user:", "pass:email:")):
        return signed_in(settings, pass_id)
    return {**ADMIN, "X-Mina-Pass-Id": pass_id}


async def test_money_checks_and_old_customers(services: Services, db: Any) -> None:
    """Chains of creates settle with exact money; no customer that existed before gains a credit."""
    before = await all_rows(db)
    await services.start_all(welcome_credits=WELCOME, offline_latency_ms=50)
    run = Driver(services.gateway_url, services.settings.database_url or "", "production", chains=4)
    await run.run()
    await settle_and_check(run, services.settings, expect_errors=False)

    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30.0) as client:
        # an old customer at 0: a balance read and a create give it nothing, the create is refused
        zero = as_customer(services.settings, "pass:email:zero@example.com")
        assert (await client.get("/credits/balance", headers=zero)).json()["balance"] == 0
        refused = await client.post("/mma/still/create", headers=zero, json={"inputs": {"brief": "a cup"}})
        assert refused.status_code == 402, refused.text
        # an old customer with a legacy balance spends it like any other
        legacy = as_customer(services.settings, "pass:shopify:7001")
        _, sse = await create_and_watch(client, "/mma/still/create", {"inputs": {"brief": "a lamp"}}, legacy)
        assert sse.events[-1].event == "done", sse.events[-3:]
        balance = (await client.get("/credits/balance", headers=legacy)).json()["balance"]
        assert balance == BALANCES["pass:shopify:7001"] - 1

    await ledger_caught_up(services.settings)
    after = await all_rows(db)
    changed = [k for k, row in before.items()
               if not k.startswith("mega_customers:") and {c: after[k][c] for c in row} != row]
    assert changed == [], changed  # every old generation, credit, session, config and error row as it was
    new_credits = await new_credit_rows(db, before)
    assert not [r for r in new_credits if r["mg_pass_id"] in BALANCES and r["mg_delta"] > 0], new_credits
    for pass_id, balance in BALANCES.items():
        spent = sum(r["mg_delta"] for r in new_credits if r["mg_pass_id"] == pass_id)
        assert after[f"mega_customers:{pass_id}"]["mg_credits"] == balance + spent, pass_id
    assert "MEGA reconcile: OK" in reconcile(services.settings)


async def test_admin_config_and_old_rows_read_sensibly(stack: Services, client: httpx.AsyncClient, db: Any) -> None:
    """Admin adjust and config work; legacy generations, the unversioned config and old error rows read well."""
    adjust = await client.post("/admin/credits/adjust", headers={**ADMIN, "Idempotency-Key": "prod-goodwill-1"},
                               json={"passId": "pass:shopify:7002", "delta": 4, "reason": "goodwill"})
    assert adjust.status_code == 200, adjust.text
    assert adjust.json()["creditsAfter"] == BALANCES["pass:shopify:7002"] + 4
    audit = await db.fetchrow("select * from mega_admin where mg_record_type = 'admin_audit' "
                              "and mg_source_system = 'mma'")
    assert audit["mg_actor_pass_id"] is None and audit["mg_detail"]

    runtime = await client.get("/admin/config/runtime", headers=ADMIN)
    assert runtime.status_code == 200, runtime.text
    assert runtime.json()["config"]["runtime"]["version"] == 0
    assert runtime.json()["config"]["runtime"]["value"]["image_cost"] == 1
    listed = await client.get("/ops/api/config", headers=ADMIN)
    assert listed.status_code == 200, listed.text

    h = as_customer(stack.settings, OLD_USER)
    for gid, (state, owner) in LEGACY_GENERATIONS.items():
        got = await client.get(f"/mma/generations/{gid}", headers=as_customer(stack.settings, owner))
        assert got.status_code == 200 and got.json()["state"] == state, (gid, got.text)
    history = (await client.get(f"/history/pass/{OLD_USER}", headers=h)).json()
    statuses = {g["id"]: g["status"] for g in history["generations"]}
    assert statuses == {"legacy-still-1": "done", "legacy-still-2": "error"}, statuses
    assert history["credits"]["balance"] == BALANCES[OLD_USER]
    assert {t["delta"] for t in history["credits"]["history"]} >= {5, -1, 0}  # legacy rows and the opening row

    errors = (await client.get("/mma/admin/errors", headers=ADMIN)).json()["errors"]
    old = [e for e in errors if e["id"] == "0b1c2d3e-4f5a-4b6c-9d7e-8f9a0b1c2d12"]
    assert old and old[0]["detail"]["message"] == "Prediction did not finish in 120s", errors

    # a new customer's first create lands every MMA record type; the ops plane takes an error row
    new = {"X-Mina-Pass-Id": "pass:anon:prod-new-1"}
    gid, sse = await create_and_watch(client, "/mma/still/create", {"inputs": {"brief": "a bowl"}}, new)
    assert sse.events[-1].event == "done"
    r = await client.post("/mma/events", headers=new, json={"generation_id": gid, "event_type": "like",
                                                           "payload": {"tags": ["style.minimal"]}})
    assert r.status_code == 200, r.text
    r = await client.post("/api/log-error", headers=new, json={"message": "frontend crashed", "url": "/studio"})
    assert r.status_code < 500, r.text

    async def landed() -> bool:
        kinds = {r["mg_record_type"] for r in await db.fetch(
            "select distinct mg_record_type from mega_generations where mg_pass_id = 'pass:anon:prod-new-1'")}
        errors = await db.fetchval("select count(*) from mega_admin where mg_source_system = 'mma' "
                                   "and mg_record_type = 'error'")
        return {"generation", "mma_step", "mma_event", "credit_transaction"} <= kinds and errors >= 1

    await wait_for(landed, 30, what="every MMA record type on the production database")
    # last: a new context version would change how later runs read (this template is no real one)
    added = await client.post("/ops/api/config", headers=ADMIN,
                              json={"key": "mma.ctx.gpt_reader", "value": {"template": "v-prod"}})
    assert added.status_code == 200, added.text
    assert added.json()["entry"]["version"] >= 1
    await ledger_caught_up(stack.settings)
    assert "MEGA reconcile: OK" in reconcile(stack.settings)
