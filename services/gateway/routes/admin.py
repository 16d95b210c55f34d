"""Admin and ops reads, all behind the admin token (ROUTES.md "Our decisions")."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from libs.errors import InvalidInputError
from libs.schemas import (
    AdjustResult,
    AdminAdjust,
    AdminSummary,
    ConfigMap,
    CreditOutcome,
    CustomerList,
    ErrorList,
    GetActiveConfig,
    ListCustomers,
    ListErrors,
    ListSteps,
    Reconcile,
    ReconcileReport,
    StepList,
    SummaryView,
)
from services.gateway.bodies import Body, first
from services.gateway.deps import GatewayDeps
from services.gateway.identity import PASS_HEADER, normalize_pass_id
from services.gateway.routes.common import get_deps, request_id, require_admin
from services.gateway.views import iso

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)],
                   responses={401: {"description": '{error:"Unauthorized"}'}})


@router.get("/mma/admin/errors")
async def admin_errors(generation_id: str | None = None, category: str | None = None, limit: int = 100,
                       deps: GatewayDeps = Depends(get_deps)) -> dict[str, Any]:
    """The ops error feed, newest first."""
    result = await deps.bus.request(ListErrors(generation_id=generation_id, category=category,
                                               limit=max(1, min(limit, 1000))), ErrorList)
    return {"errors": [e.model_dump(mode="json") for e in result.errors]}


async def _steps(deps: GatewayDeps, generation_id: str | None) -> dict[str, Any]:
    if not generation_id:
        raise InvalidInputError("generation_id is required.", code="MISSING_GENERATION_ID")
    result = await deps.bus.request(ListSteps(generation_id=generation_id), StepList)
    return {"generation_id": generation_id, "steps": [s.model_dump(mode="json") for s in result.steps]}


@router.get("/mma/admin/steps/{generation_id}")
async def admin_steps(generation_id: str, deps: GatewayDeps = Depends(get_deps)) -> dict[str, Any]:
    """One generation's step timeline, ordered by step no."""
    return await _steps(deps, generation_id)


@router.get("/mma/admin/steps")
async def admin_steps_query(generation_id: str | None = None, deps: GatewayDeps = Depends(get_deps),
                            ) -> dict[str, Any]:
    return await _steps(deps, generation_id)


@router.get("/admin/summary")
async def admin_summary(deps: GatewayDeps = Depends(get_deps)) -> dict[str, Any]:
    summary = await deps.bus.request(AdminSummary(), SummaryView)
    return {"ok": True, "totalCustomers": summary.total_customers, "totalGenerations": summary.total_generations,
            "countsByDay": summary.counts_by_day, "source": "mega"}


@router.get("/admin/customers")
async def admin_customers(limit: int = 200, deps: GatewayDeps = Depends(get_deps)) -> dict[str, Any]:
    result = await deps.bus.request(ListCustomers(limit=max(1, min(limit, 1000))), CustomerList)
    customers = [{"passId": c.pass_id, "credits": c.credits, "expiresAt": iso(c.expires_at), "email": c.email,
                  "userId": c.user_id, "lastActive": iso(c.last_active), "createdAt": iso(c.created_at)}
                 for c in result.customers]
    return {"ok": True, "customers": customers, "source": "mega"}


@router.get("/admin/mega/parity")
async def admin_parity(deps: GatewayDeps = Depends(get_deps)) -> dict[str, Any]:
    """The MEGA invariants (balance = Σ deltas, permanent URLs, nothing stuck), as the ledger checks them."""
    report = await deps.bus.request(Reconcile(stuck_after_s=deps.settings.stuck_after_s,
                                              public_base=deps.store.public_base), ReconcileReport, timeout=60.0)
    return {"ok": report.ok, "summary": {"checks": report.checks, "totals": report.totals,
                                         "breaches": report.breaches[:100]}}


@router.get("/admin/config/runtime")
async def admin_config(deps: GatewayDeps = Depends(get_deps)) -> dict[str, Any]:
    config = await deps.bus.request(GetActiveConfig(), ConfigMap)
    return {"ok": True, "config": {k: v.model_dump(mode="json") for k, v in config.entries.items()}}


class AdjustBody(Body):
    passId: str | None = None
    customerId: str | None = None
    delta: Any = None
    amount: Any = None
    reason: str | None = None
    idempotencyKey: Any = None
    idempotency_key: Any = None


MAX_KEY_CHARS = 200


def idempotency_key(request: Request, body: AdjustBody, *, required: bool) -> str | None:
    """The client's `Idempotency-Key` (header, or `idempotencyKey` in the body): the credit ref is
    derived from it, so a retried request credits once. Admin adjusts must send one."""
    key = first(request.headers.get("idempotency-key"), body.idempotencyKey, body.idempotency_key)
    if key is None:
        if required:
            raise InvalidInputError("An Idempotency-Key header (or idempotencyKey in the body) is required, so a"
                                    " retried adjustment credits once.", code="MISSING_IDEMPOTENCY_KEY")
        return None
    if not isinstance(key, str | int) or isinstance(key, bool) or len(str(key)) > MAX_KEY_CHARS \
            or not str(key).isprintable():
        raise InvalidInputError(f"The Idempotency-Key must be printable text of at most {MAX_KEY_CHARS}"
                                " characters.", code="INVALID_IDEMPOTENCY_KEY")
    return str(key)


def _target(request: Request, body: AdjustBody) -> str:
    target = normalize_pass_id(first(body.passId, body.customerId)) or normalize_pass_id(
        request.headers.get(PASS_HEADER))
    if target is None:
        raise InvalidInputError("passId (or customerId) is required.", code="MISSING_PASS_ID")
    request.state.pass_id = target
    return target


def _amount(value: Any) -> int:
    """A non-zero whole number of credits (`5`, `5.0` or `"5"`); anything else is INVALID_AMOUNT."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if isinstance(value, bool) or number != number or not number.is_integer() or number == 0:
        raise InvalidInputError("The amount must be a non-zero whole number.", code="INVALID_AMOUNT")
    return int(number)


async def _adjust(request: Request, response: Response, deps: GatewayDeps, body: AdjustBody, value: Any,
                  default_reason: str, *, key_required: bool) -> tuple[str, AdjustResult]:
    """Billing's audited credit change for the body's pass id (the one path of both admin credit routes).

    A repeat with the same key answers the first result, marked `Idempotent-Replayed: true`."""
    target = _target(request, body)
    delta = _amount(value)
    key = idempotency_key(request, body, required=key_required)
    result = await deps.bus.request(AdminAdjust(pass_id=target, delta=delta, reason=body.reason or default_reason,
                                                actor="admin_token", request_id=request_id(request),
                                                idempotency_key=key), AdjustResult)
    if result.outcome is CreditOutcome.DUPLICATE:
        response.headers["Idempotent-Replayed"] = "true"
    return target, result


@router.post("/admin/credits/adjust")
async def admin_adjust(request: Request, response: Response, body: AdjustBody | None = None,
                       deps: GatewayDeps = Depends(get_deps)) -> dict[str, Any]:
    """A credit change with its `admin_audit` row (billing asks the ledger); `Idempotency-Key` required."""
    request.state.failure_code = "ADJUST_FAILED"
    body = body or AdjustBody()
    target, result = await _adjust(request, response, deps, body,
                                   body.delta if body.delta is not None else body.amount, "admin_adjust",
                                   key_required=True)
    return {"ok": True, "requestId": request_id(request), "passId": target, "creditsBefore": result.credits_before,
            "creditsAfter": result.credits_after, "expiresAt": iso(result.expires_at), "customerId": target,
            "balance": result.credits_after, "source": "mega"}


@router.post("/credits/add")
async def credits_add(request: Request, response: Response, body: AdjustBody | None = None,
                      deps: GatewayDeps = Depends(get_deps)) -> dict[str, Any]:
    """E2's credit grant, now admin-only; credited once per `Idempotency-Key` when one is sent."""
    request.state.failure_code = "CREDITS_ADD_FAILED"
    body = body or AdjustBody()
    target, result = await _adjust(request, response, deps, body,
                                   body.amount if body.amount is not None else body.delta, "credits_add",
                                   key_required=False)
    return {"ok": True, "requestId": request_id(request), "customerId": target, "newBalance": result.credits_after,
            "source": "mega", "passId": target}


class BillingSettingsBody(Body):
    customerId: str | None = None
    passId: str | None = None
    enabled: bool | None = None
    monthlyLimitPacks: int | None = None


@router.get("/billing/settings")
async def billing_settings_get(request: Request, customerId: str | None = None, passId: str | None = None,
                               ) -> JSONResponse:
    """E2's auto top-up settings (unused by the client): reported as off."""
    target = normalize_pass_id(first(customerId, passId))
    if target is None:
        return JSONResponse({"error": "Missing customerId", "requestId": request_id(request)}, status_code=400)
    request.state.pass_id = target
    return JSONResponse({"customerId": first(customerId, passId), "enabled": False, "monthlyLimitPacks": 0,
                         "passId": target, "source": "mega"})


@router.post("/billing/settings")
async def billing_settings_post(request: Request, body: BillingSettingsBody | None = None) -> JSONResponse:
    body = body or BillingSettingsBody()
    target = normalize_pass_id(first(body.customerId, body.passId))
    if target is None:
        return JSONResponse({"error": "customerId is required", "requestId": request_id(request)}, status_code=400)
    request.state.pass_id = target
    return JSONResponse({"customerId": first(body.customerId, body.passId), "enabled": bool(body.enabled),
                         "monthlyLimitPacks": max(0, body.monthlyLimitPacks or 0), "passId": target})
