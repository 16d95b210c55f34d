"""Ledger-only fixtures: a pool on the test's migrated database, handler deps, row snapshots."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from libs.settings import Settings
from services.ledger.adapters.pg import create_pool
from services.ledger.deps import LedgerDeps


@pytest.fixture
async def pool(database_url: str) -> AsyncIterator[Any]:
    created = await create_pool(database_url, min_size=1, max_size=20)
    yield created
    await created.close()


@pytest.fixture
def deps(pool: Any) -> LedgerDeps:
    return LedgerDeps(pool=pool, settings=Settings(_env_file=None))  # type: ignore[call-arg]


async def snapshot(pool: Any) -> dict[str, list[dict[str, Any]]]:
    """Every row of the three tables, mg_updated_at left out (it records when, not what)."""
    tables: dict[str, list[dict[str, Any]]] = {}
    async with pool.acquire() as conn:
        for table, key in (("mega_customers", "mg_pass_id"), ("mega_generations", "mg_id"), ("mega_admin", "mg_id")):
            rows = await conn.fetch(f"select * from {table} order by {key}")
            tables[table] = [{k: v for k, v in dict(r).items() if k != "mg_updated_at"} for r in rows]
    return tables
