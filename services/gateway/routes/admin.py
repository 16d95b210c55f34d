"""Admin reads of ROUTES.md, all behind the admin token ("Our decisions"): errors, steps, summary, customers,
MEGA parity, runtime config (and the older editor's `/api/runtime-config`). The ledger reads they share with
the ops console are `adapters/ledger.py`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from libs.errors import InvalidInputError
from libs.schemas import AddConfigVersion, ConfigEntry, ConfigMap
from services.gateway.auth.identity import json_body
from services.gateway.deps import GatewayDeps
from services.gateway.generations.views import iso
from services.gateway.routes.common import UNAUTHORIZED, get_deps, require_admin
from services.gateway.routes.ops_console import CONFIG_KEY

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)], responses=UNAUTHORIZED)


@router.get("/mma/admin/errors")
async def admin_errors(generation_id: str | None = None, category: str | None = None, limit: int = 100,
                       deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """The ops error feed, newest first."""
    result = await deps.ledger.errors(generation_id=generation_id, category=category, limit=limit)
    return {"errors": [e.model_dump(mode="json") for e in result.errors]}


async def _steps(deps: GatewayDeps, generation_id: str | None) -> dict[str, object]:
    if not generation_id:
        raise InvalidInputError("generation_id is required.", code="MISSING_GENERATION_ID")
    result = await deps.ledger.steps(generation_id)
    return {"generation_id": generation_id, "steps": [s.model_dump(mode="json") for s in result.steps]}


@router.get("/mma/admin/steps/{generation_id}")
async def admin_steps(generation_id: str, deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """One generation's step timeline, ordered by step no."""
    return await _steps(deps, generation_id)


@router.get("/mma/admin/steps")
async def admin_steps_query(generation_id: str | None = None, deps: GatewayDeps = Depends(get_deps),
                            ) -> dict[str, object]:
    return await _steps(deps, generation_id)


@router.get("/admin/summary")
async def admin_summary(deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    summary = await deps.ledger.summary()
    return {"ok": True, "totalCustomers": summary.total_customers, "totalGenerations": summary.total_generations,
            "countsByDay": summary.counts_by_day, "source": "mega"}


@router.get("/admin/customers")
async def admin_customers(limit: int = 200, deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    result = await deps.ledger.customers(limit)
    customers = [{"passId": c.pass_id, "credits": c.credits, "expiresAt": iso(c.expires_at), "email": c.email,
                  "userId": c.user_id, "lastActive": iso(c.last_active), "createdAt": iso(c.created_at)}
                 for c in result.customers]
    return {"ok": True, "customers": customers, "source": "mega"}


@router.get("/admin/mega/parity")
async def admin_parity(deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """The MEGA invariants (balance = Σ deltas, permanent URLs, nothing stuck), as the ledger checks them."""
    report = await deps.ledger.reconcile(deps.settings.stuck_after_s, deps.store.public_base)
    return {"ok": report.ok, "summary": {"checks": report.checks, "totals": report.totals,
                                         "breaches": report.breaches[:100]}}


@router.get("/admin/config/runtime")
async def admin_config(deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    config = await deps.ledger.active_config()
    return {"ok": True, "config": {k: v.model_dump(mode="json") for k, v in config.entries.items()}}


def runtime_view(config: ConfigMap) -> dict[str, object]:
    """The active value and version of each config key, as the older runtime-config editor loads it."""
    entries = sorted(config.entries.values(), key=lambda e: e.key)
    return {"ok": True, "config": {e.key: e.value for e in entries}, "versions": {e.key: e.version for e in entries}}


@router.get("/api/runtime-config")
async def runtime_config(deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """The older admin editor's read (until 2025-12-16): the versioned config the pipeline runs with."""
    return runtime_view(await deps.ledger.active_config())


def _edited(body: dict[str, object]) -> dict[str, dict[str, object]]:
    """The keys the editor sends back: `{config:{key: value}}` (what GET gave it) or `{key: value}`."""
    sent = body.get("config")
    values = sent if isinstance(sent, dict) else {k: v for k, v in body.items() if k not in ("ok", "versions")}
    edited: dict[str, dict[str, object]] = {}
    for key, value in values.items():
        if not CONFIG_KEY.match(str(key)):
            raise InvalidInputError(f"{key!r} is not a context (mma.ctx.*) or a provider preset (mma.provider.*).",
                                    code="INVALID_CONFIG_KEY")
        if not isinstance(value, dict) or not value:
            raise InvalidInputError(f"The value of {key} must be a non-empty JSON object.",
                                    code="INVALID_CONFIG_VALUE")
        edited[str(key)] = value
    if not edited:
        raise InvalidInputError("Send the config to save: {config: {<key>: {...}}}.", code="INVALID_CONFIG_VALUE")
    return edited


def _content(value: dict[str, object]) -> dict[str, object]:
    """A config value as the ledger stores it, without the version it stamps on each one."""
    return {"enabled": True, **{k: v for k, v in value.items() if k != "version"}}


@router.put("/api/runtime-config")
async def runtime_config_put(request: Request, deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """The older editor's save: each changed key becomes its next version (with its `admin_audit` row);
    a key sent back unchanged adds nothing."""
    request.state.failure_code = "CONFIG_ADD_FAILED"
    edited = _edited(await json_body(request))
    active = (await deps.ledger.active_config()).entries
    for key, value in edited.items():
        current = active.get(key)
        if current is None or _content(current.value) != _content(value):
            await deps.bus.request(AddConfigVersion(key=key, value=value, actor="runtime_config"), ConfigEntry)
    return runtime_view(await deps.ledger.active_config())
