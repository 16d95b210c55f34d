"""The ops console's JSON reads and its one write (a config version), all behind the admin token.

These answer what the public admin routes do not: the generations list, one generation with
its parent chain, steps and credit rows, reconciliation per customer, and versioned config.
Every read goes to the ledger over the bus; nothing here touches SQL.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from libs import deadletter
from libs.errors import InvalidInputError, NotFoundError
from libs.schemas import AddConfigVersion, ConfigEntry, CustomerList, GenerationView, ReconcileReport
from services.gateway.adapters.ledger import clamp
from services.gateway.deps import GatewayDeps
from services.gateway.routes.common import UNAUTHORIZED, get_deps, require_admin

router = APIRouter(prefix="/ops/api", tags=["ops console"], dependencies=[Depends(require_admin)],
                   responses=UNAUTHORIZED)

CONFIG_KEY = re.compile(r"^mma\.(ctx|provider)\.[a-z0-9_]+(\.[a-z0-9_]+)*$")


@router.get("/generations")
async def generations(pass_id: str | None = None, limit: int = 100,
                      deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """Every generation newest first (or one customer's), with status and mode."""
    result = await deps.ledger.generations(pass_id, limit)
    return {"generations": [g.model_dump(mode="json") for g in result.generations]}


async def _generation(deps: GatewayDeps, generation_id: str) -> GenerationView:
    try:
        return await deps.ledger.generation(generation_id)
    except NotFoundError as exc:
        raise NotFoundError("Unknown generation.", code="NOT_FOUND") from exc


@router.get("/generations/{generation_id}")
async def generation_detail(generation_id: str, deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """One generation with everything ops reads about it: chain, steps, credit rows, errors."""
    view = await _generation(deps, generation_id)
    chain = await deps.ledger.parent_chain(view)
    steps = await deps.ledger.steps(generation_id)
    credits = await deps.ledger.generation_credits(generation_id)
    errors = await deps.ledger.errors(generation_id=generation_id, limit=100)
    return {
        "generation": view.model_dump(mode="json"),
        "chain": [g.model_dump(mode="json") for g in chain],
        "steps": [s.model_dump(mode="json") for s in steps.steps],
        "credits": [t.model_dump(mode="json") for t in credits.txns],
        "errors": [e.model_dump(mode="json") for e in errors.errors],
    }


@router.get("/generations/{generation_id}/chain")
async def generation_chain(generation_id: str, deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    view = await _generation(deps, generation_id)
    return {"generation_id": generation_id,
            "chain": [g.model_dump(mode="json") for g in await deps.ledger.parent_chain(view)]}


@router.get("/generations/{generation_id}/credits")
async def generation_credits(generation_id: str, deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """The credit rows that reference the generation (its debit, and a refund if it failed)."""
    result = await deps.ledger.generation_credits(generation_id)
    return {"generation_id": generation_id, "credits": [t.model_dump(mode="json") for t in result.txns]}


@router.get("/errors")
async def errors_feed(category: str | None = None, generation_id: str | None = None, limit: int = 200,
                      deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """The ops error feed newest first, optionally one category (API_ERROR, PROVIDER_ERROR, ...)."""
    result = await deps.ledger.errors(generation_id=generation_id, category=category, limit=limit)
    return {"errors": [e.model_dump(mode="json") for e in result.errors]}


@router.get("/dead-letters")
async def dead_letters(consumer: str | None = None, limit: int = 200,
                       deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """What waits in the retained dead-letter stream, oldest first, with why and whose it is.

    Read straight from JetStream: the dead letters are exactly what may be missing from MEGA.
    """
    if consumer is not None and not re.fullmatch(r"[A-Za-z0-9_-]+", consumer):
        raise InvalidInputError("consumer is a durable name (letters, digits, - and _).", code="INVALID_INPUT")
    per = await deadletter.counts(deps.bus.js)
    found = await deadletter.waiting(deps.bus.js, deadletter.filter_for(consumer), limit=clamp(limit))
    return {"waiting": sum(per.values()), "by_consumer": per, "dead_letters": [d.summary() for d in found]}


def per_customer(customers: CustomerList, report: ReconcileReport) -> list[dict[str, object]]:
    """Balance vs sum of deltas per customer.

    The reconcile check lists exactly the pass ids whose balance differs from the sum of
    their deltas (with both numbers); every other customer's sum equals its balance.
    """
    mismatches = {str(b.get("pass_id")): b for b in report.breaches if b.get("check") == "balance_mismatch"}
    rows = []
    for c in customers.customers:
        breach = mismatches.pop(c.pass_id, None)
        total = int(breach["sum_deltas"]) if breach else c.credits
        rows.append({"pass_id": c.pass_id, "balance": c.credits, "sum_deltas": total, "ok": breach is None})
    for pass_id, breach in mismatches.items():  # ledger rows of a pass id with no customer row
        rows.append({"pass_id": pass_id, "balance": breach.get("balance"),
                     "sum_deltas": int(breach.get("sum_deltas") or 0), "ok": False})
    return rows


@router.get("/reconcile")
async def reconcile(limit: int = 500, deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """The MEGA invariants overall, and balance vs sum of deltas per customer."""
    report = await deps.ledger.reconcile(deps.settings.stuck_after_s, deps.store.public_base)
    customers = await deps.ledger.customers(limit)
    return {"ok": report.ok, "checks": report.checks, "totals": report.totals, "breaches": report.breaches[:200],
            "customers": per_customer(customers, report)}


@router.get("/summary")
async def summary(deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """Totals and counts by day and record type (the parity check)."""
    view = await deps.ledger.summary()
    return view.model_dump(mode="json")


@router.get("/config")
async def active_config(deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """The active (highest enabled) version of each context and provider preset."""
    config = await deps.ledger.active_config()
    entries = sorted(config.entries.values(), key=lambda e: e.key)
    return {"entries": [e.model_dump(mode="json") for e in entries]}


class ConfigBody(BaseModel):
    key: str = ""
    value: dict[str, object] = Field(default_factory=dict)


@router.post("/config")
async def add_config(request: Request, body: ConfigBody, deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """Version N+1 of a context or preset; the ledger writes the `app_config` row and its `admin_audit` row."""
    request.state.failure_code = "CONFIG_ADD_FAILED"
    key = body.key.strip()
    if not CONFIG_KEY.match(key):
        raise InvalidInputError("key must be a context (mma.ctx.*) or a provider preset (mma.provider.*).",
                                code="INVALID_CONFIG_KEY")
    if not body.value:
        raise InvalidInputError("value must be a non-empty JSON object.", code="INVALID_CONFIG_VALUE")
    entry = await deps.bus.request(AddConfigVersion(key=key, value=body.value, actor="ops_console"), ConfigEntry)
    return {"ok": True, "entry": entry.model_dump(mode="json")}
