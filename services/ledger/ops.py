"""The ops plane's requests: error feed, lists, summary, reconcile, sweep candidates, config versions."""

from __future__ import annotations

import structlog

from libs.schemas import (
    AddConfigVersion,
    AdminSummary,
    ChargedItem,
    ChargedList,
    ChargedUnfinished,
    ConfigEntry,
    ConfigMap,
    CustomerList,
    ErrorList,
    GenerationList,
    GetActiveConfig,
    ListCustomers,
    ListErrors,
    ListGenerations,
    Reconcile,
    ReconcileReport,
    SeedConfig,
    SummaryView,
)
from services.ledger import credit_queries as cq
from services.ledger import queries as q
from services.ledger import read_queries as rq
from services.ledger.deadletters import with_dead_letters
from services.ledger.deps import LedgerDeps
from services.ledger.reconcile import run_checks
from services.ledger.views import (
    config_entry,
    customer_view,
    error_view,
    generation_view,
)

log = structlog.get_logger("ledger")


async def on_list_errors(req: ListErrors, deps: LedgerDeps) -> ErrorList:
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(rq.LIST_ERRORS, req.generation_id, req.category, rq.page(req.limit))
    return ErrorList(errors=[error_view(r) for r in rows])


async def on_list_generations(req: ListGenerations, deps: LedgerDeps) -> GenerationList:
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(rq.LIST_GENERATIONS, req.pass_id, rq.page(req.limit))
    return GenerationList(generations=[generation_view(r) for r in rows])


async def on_admin_summary(req: AdminSummary, deps: LedgerDeps) -> SummaryView:
    async with deps.pool.acquire() as conn:
        customers = await conn.fetchval(rq.COUNT_CUSTOMERS)
        generations = await conn.fetchval(rq.COUNT_GENERATIONS)
        days = await conn.fetch(rq.COUNTS_BY_DAY)
    return SummaryView(
        total_customers=customers, total_generations=generations,
        counts_by_day=[{"day": r["day"], "record_type": r["record_type"], "count": r["count"]} for r in days],
    )


async def on_list_customers(req: ListCustomers, deps: LedgerDeps) -> CustomerList:
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(rq.LIST_CUSTOMERS, rq.page(req.limit))
    return CustomerList(customers=[customer_view(r, r["mg_pass_id"]) for r in rows])


async def on_reconcile(req: Reconcile, deps: LedgerDeps) -> ReconcileReport:
    async with deps.pool.acquire() as conn:
        report = await with_dead_letters(await run_checks(conn, req), deps.js)
    log.info("ledger.reconciled", ok=report.ok, checks=report.checks)
    return report


async def on_charged_unfinished(req: ChargedUnfinished, deps: LedgerDeps) -> ChargedList:
    async with deps.pool.acquire() as conn:
        video = req.older_than_s if req.video_older_than_s is None else req.video_older_than_s
        rows = await conn.fetch(rq.CHARGED_UNFINISHED, float(req.older_than_s), q.TERMINAL_STATUSES,
                                max(1, int(req.limit)), float(video))
    return ChargedList(items=[
        ChargedItem(generation_id=r["generation_id"], pass_id=r["pass_id"] or "", debit=r["debit"] or 0,
                    status=r["status"], charged_at=r["charged_at"], mode=r["mode"], progress_at=r["progress_at"])
        for r in rows
    ])


async def on_get_active_config(req: GetActiveConfig, deps: LedgerDeps) -> ConfigMap:
    """Highest enabled version per key, read per call: a new version applies without a restart."""
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(rq.ACTIVE_CONFIG, list(req.keys))
    return ConfigMap(entries={r["mg_key"]: config_entry(r) for r in rows})


async def on_seed_config(req: SeedConfig, deps: LedgerDeps) -> ConfigMap:
    """v1 fallbacks for keys that have none; an existing version is never overwritten."""
    async with deps.pool.acquire() as conn:
        for key, value in req.entries.items():
            body = {**value, "version": 1, "enabled": value.get("enabled", True)}
            await conn.execute(rq.INSERT_CONFIG, key, 1, body, {"seeded": True})
        rows = await conn.fetch(rq.ACTIVE_CONFIG, list(req.entries))
    return ConfigMap(entries={r["mg_key"]: config_entry(r) for r in rows})


async def on_add_config_version(req: AddConfigVersion, deps: LedgerDeps) -> ConfigEntry:
    """Version N+1 under a per-key lock, so two admins never both write the same N."""
    async with deps.pool.acquire() as conn, conn.transaction():
        await conn.execute(rq.LOCK_CONFIG_KEY, req.key)
        version = int(await conn.fetchval(rq.MAX_CONFIG_VERSION, req.key)) + 1
        body = {**req.value, "version": version, "enabled": req.value.get("enabled", True)}
        await conn.execute(rq.INSERT_CONFIG, req.key, version, body, {"actor": req.actor})
        entry_id = f"app_config:{req.key}.v{version}"
        await conn.execute(cq.INSERT_AUDIT, f"config:{req.key}.v{version}", req.actor, "config_add",
                           {"key": req.key, "version": version, "id": entry_id, "actor": req.actor})
    log.info("ledger.config_version_added", key=req.key, version=version, actor=req.actor)
    return ConfigEntry(key=req.key, version=version, id=entry_id, value=body)
