"""`migrate --plan`: what the pending migrations would change on a target database, changing nothing.

Every pending file runs inside ONE transaction (a savepoint each, in apply order, so a later
file sees what an earlier one did), the schema and row counts are read before and after each,
and the transaction is rolled back. Ops read the report before production (docs/runbook.md):
added columns, indexes, constraints, functions and triggers, changed definitions, rows each
file would write per table and record type, the notices it raised, and a file that would fail.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from services.ledger.adapters.pg import Conn, connect
from services.ledger.migrate import LOCK_KEY, MIGRATIONS_DIR, migration_files

TABLES = ["mega_customers", "mega_generations", "mega_admin"]

_COLUMNS = """
select table_name || '.' || column_name as name,
       data_type || case when is_nullable = 'NO' then ' not null' else '' end
       || coalesce(' default ' || column_default, '')
       || case when is_generated = 'ALWAYS' then ' generated' else '' end as def
from information_schema.columns where table_schema = current_schema() and table_name = any($1::text[])
"""
_INDEXES = """
select tablename || '.' || indexname as name, indexdef as def
from pg_indexes where schemaname = current_schema() and tablename = any($1::text[])
"""
_CONSTRAINTS = """
select conrelid::regclass::text || '.' || conname as name, pg_get_constraintdef(oid) as def
from pg_constraint where conrelid::regclass::text = any($1::text[])
"""
_TRIGGERS = """
select tgrelid::regclass::text || '.' || tgname as name, pg_get_triggerdef(oid) as def
from pg_trigger where not tgisinternal and tgrelid::regclass::text = any($1::text[])
"""
_FUNCTIONS = """
select p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')' as name, md5(p.prosrc) as def
from pg_proc p join pg_namespace n on n.oid = p.pronamespace
where n.nspname = current_schema() and p.proname like 'mega\\_%'
"""
KINDS = {"column": _COLUMNS, "index": _INDEXES, "constraint": _CONSTRAINTS, "trigger": _TRIGGERS,
         "function": _FUNCTIONS}


@dataclass
class Snapshot:
    objects: dict[str, dict[str, str]]  # kind -> name -> definition
    rows: Counter[str]  # "<table> <record type>" -> count


@dataclass
class FilePlan:
    name: str
    changes: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class Plan:
    applied: list[str]
    pending: list[FilePlan]

    @property
    def ok(self) -> bool:
        return all(p.error is None for p in self.pending)


async def snapshot(conn: Conn) -> Snapshot:
    present = [t for t in TABLES if await conn.fetchval("select to_regclass($1)", t) is not None]
    objects: dict[str, dict[str, str]] = {}
    for kind, sql in KINDS.items():
        args = () if kind == "function" else (present,)
        objects[kind] = {r["name"]: r["def"] for r in await conn.fetch(sql, *args)}
    rows: Counter[str] = Counter()
    for table in present:
        if table == "mega_customers":
            rows[table] = int(await conn.fetchval("select count(*) from mega_customers"))
            continue
        for r in await conn.fetch(f"select mg_record_type as t, count(*) as n from {table} group by 1"):
            rows[f"{table} {r['t']}"] = int(r["n"])
    return Snapshot(objects=objects, rows=rows)


def diff(before: Snapshot, after: Snapshot) -> list[str]:
    """One line per added (+), removed (-) or changed (~) object, then rows written or removed."""
    lines: list[str] = []
    for kind in KINDS:
        old, new = before.objects.get(kind, {}), after.objects.get(kind, {})
        lines += [f"+ {kind} {name}: {new[name]}" for name in sorted(new.keys() - old.keys())]
        lines += [f"- {kind} {name}: {old[name]}" for name in sorted(old.keys() - new.keys())]
        lines += [f"~ {kind} {name}: {old[name]} -> {new[name]}"
                  for name in sorted(old.keys() & new.keys()) if old[name] != new[name]]
    for key in sorted(before.rows.keys() | after.rows.keys()):
        delta = after.rows[key] - before.rows[key]
        if delta:
            lines.append(f"{'+' if delta > 0 else '-'} rows {key}: {abs(delta)}")
    return lines


async def plan_migrations(dsn: str, directory: Path = MIGRATIONS_DIR) -> Plan:
    """The report of `migrate --plan`; the database is left exactly as it was."""
    conn = await connect(dsn)
    notices: list[str] = []
    conn.add_log_listener(lambda _c, msg: notices.append(str(msg.message)))
    try:
        await conn.execute("select pg_advisory_lock($1)", LOCK_KEY)
        try:
            done: set[str] = set()
            if await conn.fetchval("select to_regclass('mega_schema_migrations')") is not None:
                done = {r["name"] for r in await conn.fetch("select name from mega_schema_migrations")}
            files = migration_files(directory)
            plan = Plan(applied=[p.name for p in files if p.name in done], pending=[])
            tx = conn.transaction()
            await tx.start()
            try:
                await _plan_files(conn, [p for p in files if p.name not in done], plan, notices)
            finally:
                await tx.rollback()
        finally:
            await conn.execute("select pg_advisory_unlock($1)", LOCK_KEY)
    finally:
        await conn.close()
    return plan


async def _plan_files(conn: Conn, files: list[Path], plan: Plan, notices: list[str]) -> None:
    before = await snapshot(conn)
    for path in files:
        entry = FilePlan(path.name)
        plan.pending.append(entry)
        notices.clear()
        try:
            async with conn.transaction():  # a savepoint: a failing file is undone, the plan goes on
                await conn.execute(path.read_text())
        except asyncpg.PostgresError as exc:
            entry.error = f"{type(exc).__name__}: {exc}"
            entry.notices = list(notices)
            continue
        entry.notices = list(notices)
        after = await snapshot(conn)
        entry.changes = diff(before, after)
        before = after


def format_plan(plan: Plan) -> str:
    lines = [f"migrations: {len(plan.applied)} applied, {len(plan.pending)} pending"]
    for entry in plan.pending:
        lines.append(f"pending {entry.name}")
        if entry.error:
            lines.append(f"  WOULD FAIL: {entry.error}")
        lines += [f"  {line}" for line in entry.changes] or ([] if entry.error else ["  (no change)"])
        lines += [f"  notice: {n}" for n in entry.notices]
    lines.append("nothing was changed: every pending file ran in a transaction that was rolled back")
    return "\n".join(lines)
