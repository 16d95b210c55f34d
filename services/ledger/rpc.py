"""Request/reply handlers of `mma.rpc.ledger.*`: the credit apply, the reads, the config.

Reads never 404 on a customer (a missing pass id reads as 0 credits); a missing
generation raises NotFoundError, which the bus carries back to the caller.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from libs.errors import ConflictError, InvalidInputError, NotFoundError
from libs.schemas import (
    AddConfigVersion,
    AdminSummary,
    ChargedItem,
    ChargedList,
    ChargedUnfinished,
    ConfigEntry,
    ConfigMap,
    CreditApplied,
    CreditAppliedBatch,
    CreditApply,
    CreditApplyBatch,
    CreditOutcome,
    CreditTxnList,
    CustomerEvents,
    CustomerHistory,
    CustomerList,
    CustomerView,
    DeleteResult,
    DurationStats,
    EnsureCustomer,
    ErrorList,
    EventList,
    GenerationCredits,
    GenerationList,
    GenerationView,
    GetActiveConfig,
    GetCustomer,
    GetCustomerAccess,
    GetGeneration,
    HistoryPage,
    LikedItem,
    LikeList,
    LikeWindow,
    ListCustomers,
    ListErrors,
    ListGenerations,
    ListSteps,
    Model,
    RecentDurations,
    Reconcile,
    ReconcileReport,
    RpcRequest,
    SeedConfig,
    SoftDeleteHistory,
    StepList,
    SummaryView,
)
from services.ledger import queries as q
from services.ledger.access import on_get_customer_access
from services.ledger.deadletters import with_dead_letters
from services.ledger.deps import LedgerDeps
from services.ledger.pool import POOL_RPC_HANDLERS
from services.ledger.reconcile import run_checks
from services.ledger.views import (
    config_entry,
    credit_txn_view,
    customer_view,
    error_view,
    event_view,
    feedback_view,
    generation_view,
    session_view,
    step_view,
)

log = structlog.get_logger("ledger")

MAX_PAGE = 500


def _page(limit: int) -> int:
    return max(1, min(int(limit), MAX_PAGE))


def credit_ref_parts(req: CreditApply) -> tuple[str | None, str | None, str | None]:
    """(ref_type, ref_id, generation_id), defaulted from refs like `debit:generation:<id>`."""
    parts = req.ref.split(":", 2)
    ref_type, ref_id = req.ref_type, req.ref_id
    if len(parts) == 3:
        ref_type = ref_type or parts[1]
        ref_id = ref_id or parts[2]
    elif len(parts) == 2:
        ref_type = ref_type or parts[0]
        ref_id = ref_id or parts[1]
    generation_id = req.generation_id
    if generation_id is None and ref_type == "generation":
        generation_id = ref_id
    return ref_type, ref_id, generation_id


def _applied(req: CreditApply, row: Mapping[str, Any], first_balance: int | None = None) -> CreditApplied:
    outcome = CreditOutcome(row["outcome"])
    log.info("ledger.credit_applied", pass_id=req.pass_id, ref=req.ref, delta=req.delta, outcome=outcome.value,
             balance=row["credits"])
    return CreditApplied(outcome=outcome, balance=row["credits"], delta=req.delta, expires_at=row["expires_at"],
                         txn_id=req.ref, first_balance=first_balance)


def _first_balance(req: CreditApply, first: Mapping[str, Any] | None) -> int | None:
    """The balance the first apply of this audited ref left, so a retry answers what the first did.

    The same ref with another pass id or delta is not a retry but a reused key: ConflictError."""
    if not first:
        return None
    if first.get("pass_id") != req.pass_id or first.get("delta") != req.delta:
        raise ConflictError("This Idempotency-Key was already used for a different credit change.",
                            code="IDEMPOTENCY_CONFLICT", first_delta=first.get("delta"))
    balance = first.get("balance_after")
    return int(balance) if isinstance(balance, int) else None


async def on_credit_apply(req: CreditApply, deps: LedgerDeps) -> CreditApplied:
    """The money path: `mega_credit_apply` (supabase/migrations) in one statement.

    The ref row is written at most once; the conditional update never takes the balance
    below zero (nor debits expired credits); a refused change writes nothing, so the same
    ref may be applied later once there is credit. An audited change (admin) writes its
    admin_audit row in the same transaction, only when the change was applied.
    """
    ref_type, ref_id, generation_id = credit_ref_parts(req)
    args = (req.ref, req.pass_id, generation_id, req.delta, req.reason, req.source, ref_type, ref_id, req.expires_at)
    first: Mapping[str, Any] | None = None
    async with deps.pool.acquire() as conn:
        if req.audit is None:
            row = await conn.fetchrow(q.CREDIT_APPLY, *args)
        else:
            async with conn.transaction():
                row = await conn.fetchrow(q.CREDIT_APPLY, *args)
                if row is not None and row["outcome"] == CreditOutcome.APPLIED.value:
                    detail = {**req.audit, "ref": req.ref, "delta": req.delta, "pass_id": req.pass_id,
                              "balance_after": row["credits"]}
                    await conn.execute(q.INSERT_AUDIT, req.ref, req.audit.get("actor"),
                                       str(req.audit.get("action") or "credit_apply"), detail)
                elif row is not None and row["outcome"] == CreditOutcome.DUPLICATE.value:
                    first = await conn.fetchval(q.AUDIT_DETAIL, req.ref)
    assert row is not None  # the function returns exactly one row
    return _applied(req, row, _first_balance(req, first))


async def on_credit_apply_batch(req: CreditApplyBatch, deps: LedgerDeps) -> CreditAppliedBatch:
    """Many applies in ONE statement and transaction (`mega_credit_apply_many`).

    The function takes customers in pass id order, so concurrent batches never deadlock;
    each item is decided exactly as `on_credit_apply` would decide it alone.
    """
    if any(item.audit is not None for item in req.items):
        raise InvalidInputError("an audited credit change must be applied alone (CreditApply)")
    if not req.items:
        return CreditAppliedBatch(results=[])
    parts = [credit_ref_parts(item) for item in req.items]
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(
            q.CREDIT_APPLY_MANY,
            [i.ref for i in req.items], [i.pass_id for i in req.items], [p[2] for p in parts],
            [i.delta for i in req.items], [i.reason for i in req.items], [i.source for i in req.items],
            [p[0] for p in parts], [p[1] for p in parts], [i.expires_at for i in req.items],
        )
    by_idx = {row["idx"]: row for row in rows}
    return CreditAppliedBatch(results=[_applied(item, by_idx[n]) for n, item in enumerate(req.items, start=1)])


def _uuid_or_none(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return str(uuid.UUID(value))
    except ValueError:
        log.warning("ledger.user_id_invalid", user_id=value)
        return None


async def on_ensure_customer(req: EnsureCustomer, deps: LedgerDeps) -> CustomerView:
    """The customer row, and (when asked) the welcome decision in the same transaction.

    The welcome goes once (`welcome:<pass_id>`) and only to a pass id this product created; a
    customer with an opening-balance row existed before and is refused whatever its balance.
    """
    welcome = None
    async with deps.pool.acquire() as conn, conn.transaction():
        created = await conn.fetchval(q.ENSURE_CUSTOMER, req.pass_id) is not None
        row = await conn.fetchrow(q.FILL_CUSTOMER, req.pass_id, req.shopify_customer_id,
                                  _uuid_or_none(req.user_id), req.email)
        if req.welcome_credits > 0:
            welcome = await conn.fetchrow(q.WELCOME, req.pass_id, req.welcome_credits)
    view = customer_view(row, req.pass_id, created=created)
    if welcome is None:
        return view
    log.info("ledger.welcome_decided", pass_id=req.pass_id, outcome=welcome["outcome"], balance=welcome["credits"])
    return view.model_copy(update={"credits": welcome["credits"], "expires_at": welcome["expires_at"],
                                   "welcome": welcome["outcome"]})


async def on_get_customer(req: GetCustomer, deps: LedgerDeps) -> CustomerView:
    async with deps.pool.acquire() as conn:
        row = await conn.fetchrow(q.GET_CUSTOMER, req.pass_id)
    return customer_view(row, req.pass_id)


async def on_get_generation(req: GetGeneration, deps: LedgerDeps) -> GenerationView:
    async with deps.pool.acquire() as conn:
        row = await conn.fetchrow(q.GET_GENERATION, req.generation_id)
    if row is None:
        raise NotFoundError(f"generation {req.generation_id} not found", generation_id=req.generation_id)
    return generation_view(row)


async def on_recent_durations(req: RecentDurations, deps: LedgerDeps) -> DurationStats:
    async with deps.pool.acquire() as conn:
        row = await conn.fetchrow(q.RECENT_DURATIONS, max(1, int(req.limit)))
    samples = int(row["samples"] or 0) if row else 0
    return DurationStats(mean_s=float(row["mean_s"]) if row and samples else None, samples=samples)


async def on_list_steps(req: ListSteps, deps: LedgerDeps) -> StepList:
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(q.LIST_STEPS, req.generation_id)
    return StepList(steps=[step_view(r) for r in rows])


async def on_customer_history(req: CustomerHistory, deps: LedgerDeps) -> HistoryPage:
    """Newest first, soft-deleted rows left out; pages by created_at (< cursor)."""
    limit = _page(req.limit)
    async with deps.pool.acquire() as conn:
        customer = await conn.fetchrow(q.GET_CUSTOMER, req.pass_id)
        gens = await conn.fetch(q.HISTORY_ROWS, req.pass_id, "generation", req.cursor, limit + 1)
        sessions = await conn.fetch(q.HISTORY_ROWS, req.pass_id, "session", req.cursor, limit)
        feedbacks = await conn.fetch(q.HISTORY_ROWS, req.pass_id, "feedback", req.cursor, limit)
        txns = await conn.fetch(q.HISTORY_ROWS, req.pass_id, "credit_transaction", req.cursor, limit)
    has_more = len(gens) > limit
    gens = gens[:limit]
    view = customer_view(customer, req.pass_id)
    return HistoryPage(
        pass_id=req.pass_id,
        credits=view.credits,
        expires_at=view.expires_at,
        generations=[generation_view(r) for r in gens],
        sessions=[session_view(r) for r in sessions],
        feedbacks=[feedback_view(r) for r in feedbacks],
        credit_txns=[credit_txn_view(r) for r in txns],
        next_cursor=gens[-1]["mg_created_at"] if has_more and gens else None,
        has_more=has_more,
    )


async def on_customer_events(req: CustomerEvents, deps: LedgerDeps) -> EventList:
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(q.CUSTOMER_EVENTS, req.pass_id, _page(req.limit))
    return EventList(events=[event_view(r) for r in rows])


async def on_like_window(req: LikeWindow, deps: LedgerDeps) -> LikeList:
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(q.LIKE_WINDOW, req.pass_id, _page(req.limit))
    items = []
    for row in rows:
        tags = row["tags"]
        items.append(LikedItem(
            generation_id=row["mg_generation_id"], output_url=row["mg_output_url"], prompt=row["mg_prompt"],
            tags=[str(t) for t in tags] if isinstance(tags, list) else [],
        ))
    return LikeList(items=items)


async def on_generation_credits(req: GenerationCredits, deps: LedgerDeps) -> CreditTxnList:
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(q.CREDIT_TXNS_OF_GENERATION, req.generation_id)
    return CreditTxnList(txns=[credit_txn_view(r) for r in rows])


async def on_soft_delete_history(req: SoftDeleteHistory, deps: LedgerDeps) -> DeleteResult:
    """Only the owner's rows: another pass id's row with the same id is left alone."""
    bare = req.id.removeprefix("generation:") if req.id.startswith("generation:") else None
    async with deps.pool.acquire() as conn:
        status = await conn.execute(q.SOFT_DELETE, req.pass_id, req.id, bare)
    count = int(status.split()[-1])
    log.info("ledger.history_deleted", pass_id=req.pass_id, id=req.id, deleted_count=count)
    return DeleteResult(deleted_count=count)


async def on_list_errors(req: ListErrors, deps: LedgerDeps) -> ErrorList:
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(q.LIST_ERRORS, req.generation_id, req.category, _page(req.limit))
    return ErrorList(errors=[error_view(r) for r in rows])


async def on_list_generations(req: ListGenerations, deps: LedgerDeps) -> GenerationList:
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(q.LIST_GENERATIONS, req.pass_id, _page(req.limit))
    return GenerationList(generations=[generation_view(r) for r in rows])


async def on_admin_summary(req: AdminSummary, deps: LedgerDeps) -> SummaryView:
    async with deps.pool.acquire() as conn:
        customers = await conn.fetchval(q.COUNT_CUSTOMERS)
        generations = await conn.fetchval(q.COUNT_GENERATIONS)
        days = await conn.fetch(q.COUNTS_BY_DAY)
    return SummaryView(
        total_customers=customers, total_generations=generations,
        counts_by_day=[{"day": r["day"], "record_type": r["record_type"], "count": r["count"]} for r in days],
    )


async def on_list_customers(req: ListCustomers, deps: LedgerDeps) -> CustomerList:
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(q.LIST_CUSTOMERS, _page(req.limit))
    return CustomerList(customers=[customer_view(r, r["mg_pass_id"]) for r in rows])


async def on_reconcile(req: Reconcile, deps: LedgerDeps) -> ReconcileReport:
    async with deps.pool.acquire() as conn:
        report = await with_dead_letters(await run_checks(conn, req), deps.js)
    log.info("ledger.reconciled", ok=report.ok, checks=report.checks)
    return report


async def on_charged_unfinished(req: ChargedUnfinished, deps: LedgerDeps) -> ChargedList:
    async with deps.pool.acquire() as conn:
        video = req.older_than_s if req.video_older_than_s is None else req.video_older_than_s
        rows = await conn.fetch(q.CHARGED_UNFINISHED, float(req.older_than_s), q.TERMINAL_STATUSES,
                                max(1, int(req.limit)), float(video))
    return ChargedList(items=[
        ChargedItem(generation_id=r["generation_id"], pass_id=r["pass_id"] or "", debit=r["debit"] or 0,
                    status=r["status"], charged_at=r["charged_at"], mode=r["mode"], progress_at=r["progress_at"])
        for r in rows
    ])


async def on_get_active_config(req: GetActiveConfig, deps: LedgerDeps) -> ConfigMap:
    """Highest enabled version per key, read per call: a new version applies without a restart."""
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(q.ACTIVE_CONFIG, list(req.keys))
    return ConfigMap(entries={r["mg_key"]: config_entry(r) for r in rows})


async def on_seed_config(req: SeedConfig, deps: LedgerDeps) -> ConfigMap:
    """v1 fallbacks for keys that have none; an existing version is never overwritten."""
    async with deps.pool.acquire() as conn:
        for key, value in req.entries.items():
            body = {**value, "version": 1, "enabled": value.get("enabled", True)}
            await conn.execute(q.INSERT_CONFIG, key, 1, body, {"seeded": True})
        rows = await conn.fetch(q.ACTIVE_CONFIG, list(req.entries))
    return ConfigMap(entries={r["mg_key"]: config_entry(r) for r in rows})


async def on_add_config_version(req: AddConfigVersion, deps: LedgerDeps) -> ConfigEntry:
    """Version N+1 under a per-key lock, so two admins never both write the same N."""
    async with deps.pool.acquire() as conn, conn.transaction():
        await conn.execute(q.LOCK_CONFIG_KEY, req.key)
        version = int(await conn.fetchval(q.MAX_CONFIG_VERSION, req.key)) + 1
        body = {**req.value, "version": version, "enabled": req.value.get("enabled", True)}
        await conn.execute(q.INSERT_CONFIG, req.key, version, body, {"actor": req.actor})
        entry_id = f"app_config:{req.key}.v{version}"
        await conn.execute(q.INSERT_AUDIT, f"config:{req.key}.v{version}", req.actor, "config_add",
                           {"key": req.key, "version": version, "id": entry_id, "actor": req.actor})
    log.info("ledger.config_version_added", key=req.key, version=version, actor=req.actor)
    return ConfigEntry(key=req.key, version=version, id=entry_id, value=body)


RPC_HANDLERS: dict[type[RpcRequest], Callable[[Any, LedgerDeps], Awaitable[Model]]] = {
    CreditApply: on_credit_apply,
    CreditApplyBatch: on_credit_apply_batch,
    EnsureCustomer: on_ensure_customer,
    GetCustomer: on_get_customer,
    GetCustomerAccess: on_get_customer_access,
    GetGeneration: on_get_generation,
    ListSteps: on_list_steps,
    RecentDurations: on_recent_durations,
    CustomerHistory: on_customer_history,
    CustomerEvents: on_customer_events,
    LikeWindow: on_like_window,
    GenerationCredits: on_generation_credits,
    SoftDeleteHistory: on_soft_delete_history,
    ListErrors: on_list_errors,
    ListGenerations: on_list_generations,
    AdminSummary: on_admin_summary,
    ListCustomers: on_list_customers,
    Reconcile: on_reconcile,
    ChargedUnfinished: on_charged_unfinished,
    GetActiveConfig: on_get_active_config,
    SeedConfig: on_seed_config,
    AddConfigVersion: on_add_config_version,
    **POOL_RPC_HANDLERS,
}
