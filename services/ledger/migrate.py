"""Apply the MEGA SQL migrations (supabase/migrations/*.sql), each exactly once.

Applied names are recorded in `mega_schema_migrations`; an advisory lock makes two
migrators (two ledger copies starting together, `make up` plus a service) take turns
instead of racing on the same DDL.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from services.ledger.adapters.pg import connect

log = structlog.get_logger("ledger.migrate")

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
LOCK_KEY = 7_202_512_19  # pg_advisory_lock key of the migrator

CREATE_BOOKKEEPING = """
create table if not exists mega_schema_migrations (
    name text primary key,
    applied_at timestamptz not null default now()
)
"""


def migration_files(directory: Path = MIGRATIONS_DIR) -> list[Path]:
    """Migration files in apply order (the timestamp prefix sorts them)."""
    return sorted(directory.glob("*.sql"))


async def apply_migrations(dsn: str, directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply every migration not recorded yet; returns the names applied by this call.

    Each file runs in its own transaction together with its bookkeeping row, so a failed
    file leaves no half-applied state and is retried on the next run.
    """
    conn = await connect(dsn)
    applied: list[str] = []
    try:
        await conn.execute("select pg_advisory_lock($1)", LOCK_KEY)
        try:
            await conn.execute(CREATE_BOOKKEEPING)
            done = {r["name"] for r in await conn.fetch("select name from mega_schema_migrations")}
            for path in migration_files(directory):
                if path.name in done:
                    continue
                async with conn.transaction():
                    await conn.execute(path.read_text())
                    await conn.execute("insert into mega_schema_migrations (name) values ($1)", path.name)
                applied.append(path.name)
                log.info("ledger.migration_applied", migration=path.name)
        finally:
            await conn.execute("select pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await conn.close()
    return applied
