"""What the production-shaped fixture holds, and a snapshot to show a run left it alone."""

from __future__ import annotations

from typing import Any

# pass id -> balance in the fixture (the migration only added opening rows, never changed one)
BALANCES = {
    "pass:shopify:7001": 35,
    "pass:user:a1b2c3d4-0000-4000-8000-00000000aa01": 3,
    "pass:email:zero@example.com": 0,
    "pass:shopify:7002": 12,
    "pass:email:ops@example.com": 0,
}
# legacy generation -> (the state it reads as, from its mg_status alone; its owner)
LEGACY_GENERATIONS = {
    "legacy-still-1": ("done", "pass:user:a1b2c3d4-0000-4000-8000-00000000aa01"),
    "legacy-still-2": ("error", "pass:user:a1b2c3d4-0000-4000-8000-00000000aa01"),
    "legacy-motion-1": ("done", "pass:email:zero@example.com"),
}
KEYS = {"mega_customers": "mg_pass_id", "mega_generations": "mg_id", "mega_admin": "mg_id"}


async def all_rows(db: Any) -> dict[str, dict[str, Any]]:
    """Every row of the three tables, keyed `<table>:<id>`."""
    rows: dict[str, dict[str, Any]] = {}
    for table, key in KEYS.items():
        for r in await db.fetch(f"select * from {table}"):
            rows[f"{table}:{r[key]}"] = dict(r)
    return rows


async def new_credit_rows(db: Any, before: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Credit rows written since `before` was taken."""
    rows = await db.fetch("select * from mega_generations where mg_record_type = 'credit_transaction'")
    return [dict(r) for r in rows if f"mega_generations:{r['mg_id']}" not in before]
