"""Credits: a customer's balance, the admin credit changes, and E2's auto top-up settings."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from libs.errors import InvalidInputError
from libs.schemas import AdjustResult, AdminAdjust, CreditOutcome, CustomerView
from services.gateway.auth.identity import PASS_HEADER, Identity, normalize_pass_id
from services.gateway.bodies import Body, first
from services.gateway.deps import GatewayDeps
from services.gateway.generations.views import iso
from services.gateway.routes.common import (
    UNAUTHORIZED,
    ensure_customer,
    failure_code,
    get_deps,
    identity,
    request_id,
    require_admin,
)

router = APIRouter(tags=["credits"])


def live_credits(view: CustomerView) -> int:
    """Expired credits read as 0."""
    if view.expires_at is not None and view.expires_at < datetime.now(UTC):
        return 0
    return view.credits


@router.get("/credits/balance", dependencies=[Depends(failure_code("CREDITS_FAILED"))])
async def credits_balance(request: Request, deps: GatewayDeps = Depends(get_deps),
                          who: Identity = Depends(identity)) -> dict[str, object]:
    """`balance`, never a top-level `credits` (the client evaluates `credits ?? balance`)."""
    view = await ensure_customer(deps, who)
    prices = await deps.prices.get()  # billing's
    return {"ok": True, "requestId": request_id(request), "passId": who.pass_id, "balance": live_credits(view),
            "expiresAt": iso(view.expires_at), "source": "mega", "customerId": who.pass_id, "historyLength": 0,
            "meta": {"imageCost": prices.still_create, "motionCost": prices.video_animate}}


class AdjustBody(Body):
    passId: str | None = None
    customerId: str | None = None
    delta: object = None
    amount: object = None
    reason: str | None = None
    idempotencyKey: object = None
    idempotency_key: object = None


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


def _amount(value: object) -> int:
    """A non-zero whole number of credits (`5`, `5.0` or `"5"`); anything else is INVALID_AMOUNT."""
    number = float("nan")
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        with contextlib.suppress(ValueError):
            number = float(value)
    if number != number or not number.is_integer() or number == 0:
        raise InvalidInputError("The amount must be a non-zero whole number.", code="INVALID_AMOUNT")
    return int(number)


async def _adjust(request: Request, response: Response, deps: GatewayDeps, body: AdjustBody, value: object,
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


@router.post("/admin/credits/adjust", dependencies=[Depends(require_admin)], responses=UNAUTHORIZED)
async def admin_adjust(request: Request, response: Response, body: AdjustBody | None = None,
                       deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """A credit change with its `admin_audit` row (billing asks the ledger); `Idempotency-Key` required."""
    request.state.failure_code = "ADJUST_FAILED"
    body = body or AdjustBody()
    target, result = await _adjust(request, response, deps, body,
                                   body.delta if body.delta is not None else body.amount, "admin_adjust",
                                   key_required=True)
    return {"ok": True, "requestId": request_id(request), "passId": target, "creditsBefore": result.credits_before,
            "creditsAfter": result.credits_after, "expiresAt": iso(result.expires_at), "customerId": target,
            "balance": result.credits_after, "source": "mega"}


@router.post("/credits/add", dependencies=[Depends(require_admin)], responses=UNAUTHORIZED)
async def credits_add(request: Request, response: Response, body: AdjustBody | None = None,
                      deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
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


@router.get("/billing/settings", dependencies=[Depends(require_admin)], responses=UNAUTHORIZED)
async def billing_settings_get(request: Request, customerId: str | None = None, passId: str | None = None,
                               ) -> JSONResponse:
    """E2's auto top-up settings (unused by the client): reported as off."""
    target = normalize_pass_id(first(customerId, passId))
    if target is None:
        return JSONResponse({"error": "Missing customerId", "requestId": request_id(request)}, status_code=400)
    request.state.pass_id = target
    return JSONResponse({"customerId": first(customerId, passId), "enabled": False, "monthlyLimitPacks": 0,
                         "passId": target, "source": "mega"})


@router.post("/billing/settings", dependencies=[Depends(require_admin)], responses=UNAUTHORIZED)
async def billing_settings_post(request: Request, body: BillingSettingsBody | None = None) -> JSONResponse:
    body = body or BillingSettingsBody()
    target = normalize_pass_id(first(body.customerId, body.passId))
    if target is None:
        return JSONResponse({"error": "customerId is required", "requestId": request_id(request)}, status_code=400)
    request.state.pass_id = target
    return JSONResponse({"customerId": first(body.customerId, body.passId), "enabled": bool(body.enabled),
                         "monthlyLimitPacks": max(0, body.monthlyLimitPacks or 0), "passId": target})
