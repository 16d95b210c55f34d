"""MEGA migrations: idempotent, and safe over the production-shaped pre-MMA database with rows in it."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import asyncpg
import pytest

from libs.schemas import Reconcile
from services.ledger.migrate import apply_migrations, migration_files
from services.ledger.plan import plan_migrations
from services.ledger.reconcile import run_checks
from tests.conftest import PRE_MMA_FIXTURE, ROOT

TABLES = ["mega_customers", "mega_generations", "mega_admin"]
OWN_TABLES = {"mega_customers": "mg_pass_id", "mega_generations": "mg_id", "mega_admin": "mg_id"}

# What the original backend's MMA patch (supabase/mega_mma_patch.sql) did when it was run: the MMA
# columns, nullable with a default; our migrations then meet columns that already exist.
MMA_PATCH = """
alter table mega_customers add column mg_mma_preferences jsonb default '{}'::jsonb,
                           add column mg_mma_preferences_updated_at timestamptz;
alter table mega_generations add column mg_parent_id text, add column mg_step_no integer,
    add column mg_step_type text, add column mg_mma_mode text, add column mg_mma_status text,
    add column mg_mma_vars jsonb default '{}'::jsonb;
"""
# Opening balance per pre-existing customer: balance - sum of its existing deltas.
OPENING = {"pass:shopify:7001": 35, "pass:user:a1b2c3d4-0000-4000-8000-00000000aa01": 0,
           "pass:email:zero@example.com": 0, "pass:shopify:7002": 3, "pass:email:ops@example.com": 0}


async def schema_of(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        columns = await conn.fetch(
            "select table_name, column_name, data_type, is_nullable, column_default "
            "from information_schema.columns where table_schema = 'public' and table_name = any($1::text[])",
            TABLES,
        )
        indexes = await conn.fetch(
            "select tablename, indexname, indexdef from pg_indexes "
            "where schemaname = 'public' and tablename = any($1::text[])", TABLES,
        )
        constraints = await conn.fetch(
            "select conrelid::regclass::text as tbl, conname, pg_get_constraintdef(oid) as def, convalidated "
            "from pg_constraint where conrelid::regclass::text = any($1::text[])", TABLES,
        )
    finally:
        await conn.close()
    return {
        "columns": sorted(tuple(r) for r in columns),
        "indexes": sorted(tuple(r) for r in indexes),
        "constraints": sorted(tuple(r) for r in constraints),
    }


async def rows_of(dsn: str) -> dict[str, dict[str, dict[str, Any]]]:
    """Every row of the three tables by key, the columns the fixture had (mg_updated_at too)."""
    conn = await asyncpg.connect(dsn)
    try:
        out = {}
        for table, key in OWN_TABLES.items():
            out[table] = {r[key]: dict(r) for r in await conn.fetch(f"select * from {table}")}
        return out
    finally:
        await conn.close()


async def run_files_again(dsn: str) -> None:
    """Every migration file executed once more, bypassing the bookkeeping."""
    conn = await asyncpg.connect(dsn)
    try:
        for path in migration_files():
            await conn.execute(path.read_text())
    finally:
        await conn.close()


async def load_fixture(dsn: str, *extra: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(PRE_MMA_FIXTURE.read_text())
        for sql in extra:
            await conn.execute(sql)
    finally:
        await conn.close()


async def test_migrations_twice_leave_the_same_schema(empty_database_url: str) -> None:
    """Applying twice (and re-running every file by hand) changes nothing the second time."""
    applied = await apply_migrations(empty_database_url)
    assert applied == [p.name for p in migration_files()]
    first = await schema_of(empty_database_url)
    assert await apply_migrations(empty_database_url) == []
    await run_files_again(empty_database_url)
    assert await schema_of(empty_database_url) == first

    names = {r[1] for r in first["indexes"]}
    assert {"mega_customers_mma_preferences_gin", "mega_generations_mma_vars_gin",
            "mega_generations_gen_type_step_idx", "mega_generations_pass_type_created_idx",
            "mega_generations_gen_step_type_idx", "mega_admin_type_created_idx",
            "mega_admin_detail_generation_idx", "mega_admin_detail_step_type_idx"} <= names
    constraints = {r[1]: r for r in first["constraints"]}
    assert "mega_generations_mma_step_check" in constraints
    for name in ("mega_generations_mg_record_type_check", "mega_admin_mg_record_type_check"):
        assert constraints[name][3], f"{name} is validated"


@pytest.mark.parametrize("mma_patch", [False, True], ids=["pre_mma", "with_old_mma_patch"])
async def test_migrations_over_the_production_database(empty_database_url: str, mma_patch: bool) -> None:
    """Over the production shape: rows unchanged, every record type allowed, the books open, reconcile clean."""
    dsn = empty_database_url
    await load_fixture(dsn, *([MMA_PATCH] if mma_patch else []))
    before = await rows_of(dsn)
    schema_before = await schema_of(dsn)

    plan = await plan_migrations(dsn)
    assert plan.ok and [p.name for p in plan.pending] == [p.name for p in migration_files()]
    assert await rows_of(dsn) == before and await schema_of(dsn) == schema_before  # the plan changed nothing

    assert len(await apply_migrations(dsn)) == len(migration_files())
    after = await rows_of(dsn)
    for table, rows in before.items():
        for key, row in rows.items():
            assert {k: after[table][key][k] for k in row} == row, f"{table} {key} changed"

    conn = await asyncpg.connect(dsn)
    try:
        opening = {r["mg_pass_id"]: r["mg_delta"] for r in await conn.fetch(
            "select mg_pass_id, mg_delta from mega_generations where mg_id like 'credit_transaction:opening:%'")}
        assert opening == OPENING
        for record_type in ("mma_step", "mma_event"):
            await conn.execute(
                "insert into mega_generations (mg_id, mg_record_type, mg_pass_id, mg_generation_id, mg_parent_id, "
                "mg_step_no, mg_step_type) values ($1, $2, 'pass:shopify:7001', 'legacy-still-1', "
                "'generation:legacy-still-1', 1, 'scan_product')", f"{record_type}:probe", record_type)
        for record_type in ("error", "warn"):
            await conn.execute("insert into mega_admin (mg_id, mg_record_type) values ($1, $2)",
                               f"{record_type}:probe", record_type)
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("insert into mega_admin (mg_id, mg_record_type) values ('x:1', 'nonsense')")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute("insert into mega_generations (mg_id, mg_record_type, mg_pass_id, mg_generation_id) "
                               "values ('mma_step:x:1', 'mma_step', 'pass:shopify:7001', 'x')")
        report = await run_checks(conn, Reconcile(public_base="https://assets.example.com/", stuck_after_s=0))
        assert report.ok, report.breaches
        assert report.totals["sum_balances"] == report.totals["sum_deltas"] == 50
        # the whole-document JSON columns carry no planner statistics (autoanalyze's biggest cost); others do
        documents = ["mg_mma_vars", "mg_payload", "mg_meta"]
        targets = {r["attname"]: r["attstattarget"] for r in await conn.fetch(
            "select attname, attstattarget from pg_attribute where attrelid = 'mega_generations'::regclass "
            "and attname = any($1)", documents)}
        assert targets == dict.fromkeys(documents, 0)
        await conn.execute("analyze mega_generations")
        analyzed = {r["attname"] for r in await conn.fetch(
            "select attname from pg_stats where tablename = 'mega_generations'")}
        assert "mg_pass_id" in analyzed and not analyzed & set(documents)
        # the vars' GIN index moves its pending list into the index in small pieces (no 40-58 ms insert)
        options = await conn.fetchval("select reloptions from pg_class where relname = 'mega_generations_mma_vars_gin'")
        assert options == ["gin_pending_list_limit=256"]
    finally:
        await conn.close()

    schema = await schema_of(dsn)
    assert all(valid for _, name, _, valid in schema["constraints"] if name.endswith("record_type_check"))
    assert await apply_migrations(dsn) == []
    await run_files_again(dsn)
    assert await schema_of(dsn) == schema
    assert len((await rows_of(dsn))["mega_generations"]) == len(after["mega_generations"]) + 2


async def test_migrate_plan_cli_prints_the_changes_and_changes_nothing(empty_database_url: str) -> None:
    """`migrate --plan` names the widened CHECKs and the opening rows; the database stays as it was."""
    await load_fixture(empty_database_url)
    before = await rows_of(empty_database_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMA_")}
    env.update(MMA_INFRA="external", MMA_DATABASE_URL=empty_database_url, PYTHONPATH=str(ROOT), MMA_LOG_FORMAT="json")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.ledger", "migrate", "--plan", cwd=ROOT, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    text = out.decode()
    assert proc.returncode == 0, err.decode()[-2000:]
    assert f"0 applied, {len(migration_files())} pending" in text
    assert "~ constraint mega_generations.mega_generations_mg_record_type_check" in text
    assert "~ constraint mega_admin.mega_admin_mg_record_type_check" in text
    assert "+ rows mega_generations credit_transaction: 5" in text
    assert "+ column mega_generations.mg_mma_vars" in text
    assert await rows_of(empty_database_url) == before
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert await conn.fetchval("select to_regclass('mega_schema_migrations')") is None
    finally:
        await conn.close()
