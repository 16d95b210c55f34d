"""MEGA migrations: idempotent, and safe over a pre-MMA database with rows in it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg

from services.ledger.migrate import apply_migrations, migration_files

FIXTURES = Path(__file__).parent / "fixtures"
TABLES = ["mega_customers", "mega_generations", "mega_admin"]


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
            "select conrelid::regclass::text as tbl, conname, pg_get_constraintdef(oid) as def "
            "from pg_constraint where conrelid::regclass::text = any($1::text[])", TABLES,
        )
    finally:
        await conn.close()
    return {
        "columns": sorted(tuple(r) for r in columns),
        "indexes": sorted(tuple(r) for r in indexes),
        "constraints": sorted(tuple(r) for r in constraints),
    }


async def run_files_again(dsn: str) -> None:
    """Every migration file executed once more, bypassing the bookkeeping."""
    conn = await asyncpg.connect(dsn)
    try:
        for path in migration_files():
            await conn.execute(path.read_text())
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
    assert any(r[1] == "mega_generations_mma_step_check" for r in first["constraints"])


async def test_migrations_over_a_pre_mma_database_keep_rows(empty_database_url: str, database_url: str) -> None:
    """The MMA columns arrive over existing tables; rows stay, NOT NULL jsonb columns backfill to {}."""
    conn = await asyncpg.connect(empty_database_url)
    try:
        await conn.execute((FIXTURES / "pre_mma.sql").read_text())
        before = await conn.fetch("select mg_id, mg_pass_id, mg_delta, mg_prompt from mega_generations order by 1")
    finally:
        await conn.close()

    assert len(await apply_migrations(empty_database_url)) == len(migration_files())
    assert await schema_of(empty_database_url) == await schema_of(database_url)

    conn = await asyncpg.connect(empty_database_url)
    try:
        after = await conn.fetch("select mg_id, mg_pass_id, mg_delta, mg_prompt from mega_generations order by 1")
        assert after == before
        assert await conn.fetchval("select count(*) from mega_customers") == 2
        assert await conn.fetchval("select mg_credits from mega_customers where mg_pass_id = $1",
                                   "pass:email:old@example.com") == 7
        assert await conn.fetchval("select bool_and(mg_mma_preferences = '{}'::jsonb) from mega_customers")
        assert await conn.fetchval("select bool_and(mg_mma_vars = '{}'::jsonb) from mega_generations")
        bad_step = (
            "insert into mega_generations (mg_id, mg_record_type, mg_pass_id, mg_generation_id) "
            "values ('mma_step:x:1', 'mma_step', 'pass:shopify:42', 'x')"
        )
        try:
            await conn.execute(bad_step)
        except asyncpg.CheckViolationError:
            pass
        else:
            raise AssertionError("an mma_step row without step no/type/parent was accepted")
    finally:
        await conn.close()
