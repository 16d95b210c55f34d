"""The money path's requests: credit applies (one, or a batch), and a customer's row with its welcome.

Balances change only through `mega_credit_apply` (supabase/migrations): one statement, the ref
row at most once, never below zero.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import structlog

from libs.errors import ConflictError, InvalidInputError
from libs.schemas import (
    CreditApplied,
    CreditAppliedBatch,
    CreditApply,
    CreditApplyBatch,
    CreditOutcome,
    CustomerView,
    EnsureCustomer,
)
from services.ledger import credit_queries as cq
from services.ledger import queries as q
from services.ledger.adapters.pg import Row
from services.ledger.deps import LedgerDeps
from services.ledger.views import customer_view

log = structlog.get_logger("ledger")


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


def _applied(req: CreditApply, row: Row, first_balance: int | None = None) -> CreditApplied:
    outcome = CreditOutcome(row["outcome"])
    log.info("ledger.credit_applied", pass_id=req.pass_id, ref=req.ref, delta=req.delta, outcome=outcome.value,
             balance=row["credits"])
    return CreditApplied(outcome=outcome, balance=row["credits"], delta=req.delta, expires_at=row["expires_at"],
                         txn_id=req.ref, first_balance=first_balance)


def _first_balance(req: CreditApply, first: Row | None) -> int | None:
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
    """The money path: `mega_credit_apply` (supabase/migrations) in one statement, or with the
    applies that arrived beside it in one `mega_credit_apply_many` (credit_queue.py).

    The ref row is written at most once; the conditional update never takes the balance
    below zero (nor debits expired credits); a refused change writes nothing, so the same
    ref may be applied later once there is credit. An audited change (admin) writes its
    admin_audit row in the same transaction, only when the change was applied.
    """
    if req.audit is None:  # concurrent applies go to Postgres together (credit_queue.py)
        grouped = await deps.credit_queue.submit(req, lambda items: _apply_many(deps, items),
                                                 lambda item: _apply_one(deps, item))
        return _applied(req, grouped)
    ref_type, ref_id, generation_id = credit_ref_parts(req)
    args = (req.ref, req.pass_id, generation_id, req.delta, req.reason, req.source, ref_type, ref_id, req.expires_at)
    first: Row | None = None
    async with deps.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(cq.CREDIT_APPLY, *args)
        if row is not None and row["outcome"] == CreditOutcome.APPLIED.value:
            detail = {**req.audit, "ref": req.ref, "delta": req.delta, "pass_id": req.pass_id,
                      "balance_after": row["credits"]}
            await conn.execute(cq.INSERT_AUDIT, req.ref, req.audit.get("actor"),
                               str(req.audit.get("action") or "credit_apply"), detail)
        elif row is not None and row["outcome"] == CreditOutcome.DUPLICATE.value:
            first = await conn.fetchval(cq.AUDIT_DETAIL, req.ref)
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
    rows = await _apply_many(deps, req.items)
    return CreditAppliedBatch(results=[_applied(item, row) for item, row in zip(req.items, rows, strict=True)])


async def _apply_one(deps: LedgerDeps, req: CreditApply) -> Row:
    ref_type, ref_id, generation_id = credit_ref_parts(req)
    async with deps.pool.acquire() as conn:
        row = await conn.fetchrow(cq.CREDIT_APPLY, req.ref, req.pass_id, generation_id, req.delta, req.reason,
                                  req.source, ref_type, ref_id, req.expires_at)
    assert row is not None  # the function returns exactly one row
    return row


async def _apply_many(deps: LedgerDeps, items: Sequence[CreditApply]) -> list[Row]:
    """`mega_credit_apply_many`: one statement, one transaction; the rows in the order of `items`."""
    parts = [credit_ref_parts(item) for item in items]
    async with deps.pool.acquire() as conn:
        rows = await conn.fetch(
            cq.CREDIT_APPLY_MANY,
            [i.ref for i in items], [i.pass_id for i in items], [p[2] for p in parts],
            [i.delta for i in items], [i.reason for i in items], [i.source for i in items],
            [p[0] for p in parts], [p[1] for p in parts], [i.expires_at for i in items],
        )
    by_idx = {row["idx"]: row for row in rows}
    return [by_idx[n] for n in range(1, len(items) + 1)]


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
        row = await conn.fetchrow(cq.FILL_CUSTOMER, req.pass_id, req.shopify_customer_id,
                                  _uuid_or_none(req.user_id), req.email)
        if req.welcome_credits > 0:
            welcome = await conn.fetchrow(cq.WELCOME, req.pass_id, req.welcome_credits)
    view = customer_view(row, req.pass_id, created=created)
    if welcome is None:
        return view
    log.info("ledger.welcome_decided", pass_id=req.pass_id, outcome=welcome["outcome"], balance=welcome["credits"])
    return view.model_copy(update={"credits": welcome["credits"], "expires_at": welcome["expires_at"],
                                   "welcome": welcome["outcome"]})
