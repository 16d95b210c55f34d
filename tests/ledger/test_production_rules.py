"""The ledger's rules on the migrated production-shaped database: welcome, actors, config, old rows."""

from __future__ import annotations

from typing import Any

import pytest

from libs.schemas import (
    AddConfigVersion,
    CreditApply,
    CustomerHistory,
    EnsureCustomer,
    GetActiveConfig,
    GetGeneration,
    ListErrors,
    OpsLogged,
    Reconcile,
)
from services.ledger import rpc
from services.ledger.adapters.pg import create_pool
from services.ledger.deps import LedgerDeps
from services.ledger.handlers import EVENT_HANDLERS, project_batch
from tests.ledger.events import every_event

OLD_USER = "pass:user:a1b2c3d4-0000-4000-8000-00000000aa01"


@pytest.fixture
async def prod(prod_database_url: str, deps: LedgerDeps) -> Any:
    pool = await create_pool(prod_database_url, min_size=1, max_size=5)
    yield LedgerDeps(pool=pool, settings=deps.settings)
    await pool.close()


async def test_welcome_only_for_a_pass_id_this_product_creates(prod: LedgerDeps) -> None:
    """An old customer at 0 is refused whatever it asks; a new pass id gets the welcome once."""
    for pass_id, balance in (("pass:email:zero@example.com", 0), ("pass:shopify:7001", 35)):
        view = await rpc.on_ensure_customer(EnsureCustomer(pass_id=pass_id, welcome_credits=20), prod)
        assert (view.welcome, view.credits) == ("ineligible", balance)
    first = await rpc.on_ensure_customer(EnsureCustomer(pass_id="pass:anon:new-1", welcome_credits=20), prod)
    again = await rpc.on_ensure_customer(EnsureCustomer(pass_id="pass:anon:new-1", welcome_credits=20), prod)
    assert (first.created, first.welcome, first.credits) == (True, "applied", 20)
    assert (again.welcome, again.credits) == ("duplicate", 20)
    async with prod.pool.acquire() as conn:
        assert await conn.fetchval("select count(*) from mega_generations where mg_reason = 'welcome' "
                                   "and mg_pass_id = 'pass:email:zero@example.com'") == 0


async def test_non_customer_actors_and_every_record_type_land(prod: LedgerDeps) -> None:
    """Audits by the admin token, events of every type and a batch all land despite the foreign keys."""
    applied = await rpc.on_credit_apply(CreditApply(pass_id="pass:shopify:7002", delta=2, ref="admin:r-1",
                                                    audit={"actor": "admin_token", "action": "credits.adjust"}), prod)
    assert applied.balance == 14
    entry = await rpc.on_add_config_version(AddConfigVersion(key="mma.ctx.gpt_reader", value={"t": 1},
                                                             actor="ops_console"), prod)
    assert entry.version == 1
    for msg in every_event("p1", OLD_USER):
        await EVENT_HANDLERS[type(msg)](msg, prod)
    await project_batch(every_event("p2", "pass:anon:batch-1"), prod)
    stranger = OpsLogged(log_id="o-x", level="warn", actor_pass_id="pass:anon:never-seen", detail={"k": 1})
    await EVENT_HANDLERS[OpsLogged](stranger, prod)
    async with prod.pool.acquire() as conn:
        audits = await conn.fetch("select mg_actor_pass_id, mg_meta from mega_admin "
                                  "where mg_record_type = 'admin_audit' and mg_source_system = 'mma'")
        assert {a["mg_meta"]["actor"] for a in audits} == {"admin_token", "ops_console"}
        assert all(a["mg_actor_pass_id"] is None for a in audits)
        kinds = {r["mg_record_type"] for r in await conn.fetch(
            "select distinct mg_record_type from mega_generations where mg_pass_id = any($1::text[])",
            [OLD_USER, "pass:anon:batch-1"])}
        assert {"mma_step", "mma_event", "generation", "session", "feedback"} <= kinds
        row = await conn.fetchrow("select * from mega_admin where mg_id = 'warn:o-x'")
        assert row["mg_actor_pass_id"] is None and row["mg_detail"]["actor_pass_id"] == "pass:anon:never-seen"
        assert await conn.fetchval("select count(*) from mega_admin where mg_id like 'error:dlq:%'") == 1
    report = await rpc.on_reconcile(Reconcile(public_base="https://assets.example.com/", stuck_after_s=0), prod)
    assert report.ok, report.breaches


async def test_old_rows_read_sensibly(prod: LedgerDeps) -> None:
    """Legacy status, version 0 config, legacy credits in history, the old logger's errors in the feed."""
    still = await rpc.on_get_generation(GetGeneration(generation_id="legacy-still-1"), prod)
    failed = await rpc.on_get_generation(GetGeneration(generation_id="legacy-still-2"), prod)
    assert (still.status, still.mg_status, failed.status) == ("done", "succeeded", "error")
    config = await rpc.on_get_active_config(GetActiveConfig(), prod)
    assert config.entries["runtime"].version == 0 and config.entries["runtime"].id == "app_config:runtime"
    page = await rpc.on_customer_history(CustomerHistory(pass_id=OLD_USER), prod)
    assert page.credits == 3 and sum(t.delta for t in page.credit_txns) == 3
    errors = await rpc.on_list_errors(ListErrors(), prod)
    by_id = {e.id: e for e in errors.errors}
    assert by_id["1c2d3e4f-5a6b-4c7d-8e9f-a0b1c2d3e413"].detail == {
        "field": "lastImageUrl", "error_code": "BAD_INPUT", "message": "lastImageUrl is required"}
