"""Buying and earning credits: the checkout (a Shopify draft order), the shop's way back, the paid-order
webhook that credits it, and the signed-in customer's welcome claim. Billing decides all of them.
"""

from __future__ import annotations

import base64
import contextlib
import math

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse

from libs.errors import InvalidInputError, MmaError
from libs.schemas import (
    CheckoutCreated,
    ClaimWelcome,
    CreateCheckout,
    ShopifyOrder,
    ShopifyOrderResult,
    WelcomeClaimed,
)
from services.gateway.auth.access import caller_of
from services.gateway.auth.identity import Identity
from services.gateway.bodies import PassFields
from services.gateway.deps import GatewayDeps
from services.gateway.errors import legacy_body
from services.gateway.generations.views import iso
from services.gateway.routes.common import get_deps, identity, request_id

router = APIRouter(tags=["checkout"])

# billing's refusals answered as UPSTREAM.md 2.1 documents them (anything else: CHECKOUT_FAILED)
CHECKOUT_REFUSALS = {"NO_INVOICE_URL": 500}


@router.post("/api/credits/shopify-order")
async def shopify_order(request: Request, deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """The raw body and `X-Shopify-Hmac-Sha256` go to billing, which verifies and credits once per order."""
    request.state.failure_code = "WEBHOOK_FAILED"
    raw = await request.body()
    result = await deps.bus.request(ShopifyOrder(
        raw_body_b64=base64.b64encode(raw).decode(), hmac_header=request.headers.get("x-shopify-hmac-sha256"),
        request_id=request_id(request),
    ), ShopifyOrderResult)
    rid = request_id(request)
    if result.pass_id:
        request.state.pass_id = result.pass_id
    if result.already_processed:
        return {"ok": True, "requestId": rid, "alreadyProcessed": True, "orderId": result.order_id}
    if result.credited <= 0:
        return {"ok": True, "requestId": rid, "orderId": result.order_id, "credited": 0,
                "reason": result.reason or "NO_MATCHING_PRODUCT"}
    return {"ok": True, "requestId": rid, "orderId": result.order_id, "passId": result.pass_id,
            "credited": result.credited, "balance": result.balance, "expiresAt": iso(result.expires_at),
            "customerId": result.pass_id}


class CheckoutBody(PassFields):
    qty: object = None  # email is not read: only a verified token's email goes to Shopify


def packs(value: object) -> float:
    """The client's `qty` as a number, as the old backend read it (`qty || 1`); billing floors and
    clamps it. A value that is no number at all is 400 INVALID_QTY (upstream sent NaN to Shopify)."""
    if value is None or isinstance(value, bool) or value == "" or value == 0:
        return 1.0
    number = math.nan
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        with contextlib.suppress(ValueError):
            number = float(value.strip())
    if math.isnan(number):
        raise InvalidInputError("qty must be a number of packs (1 to 100).", code="INVALID_QTY")
    return number


@router.post("/api/checkout/create", responses={
    400: {"description": "INVALID_QTY"}, 500: {"description": "CHECKOUT_FAILED (message SHOPIFY_<status>), "
                                                             "NO_INVOICE_URL"},
    503: {"description": "CHECKOUT_FAILED: the shop is away (Retry-After)"}})
async def checkout_create(request: Request, body: CheckoutBody | None = None, deps: GatewayDeps = Depends(get_deps),
                          who: Identity = Depends(identity)) -> JSONResponse:
    """A Shopify draft order for `qty` packs whose paid order credits this pass id (UPSTREAM.md 2.1)."""
    request.state.failure_code = "CHECKOUT_FAILED"
    qty = packs((body or CheckoutBody()).qty)
    user = who.user
    email = user.email if user is not None and user.email_verified and user.email else None
    try:
        created = await deps.bus.request(CreateCheckout(pass_id=who.pass_id, qty=qty, email=email,
                                                        request_id=request_id(request)), CheckoutCreated)
    except MmaError as exc:
        status = CHECKOUT_REFUSALS.get(exc.instance_code)
        if status is None:
            raise
        return JSONResponse(legacy_body(exc.instance_code, exc.message, request_id(request)), status_code=status)
    return JSONResponse({"ok": True, "checkoutUrl": created.checkout_url, "draftOrderId": created.draft_order_id,
                         "requestId": request_id(request), "passId": who.pass_id})


@router.get("/checkout/return", response_class=RedirectResponse, status_code=302)
async def checkout_return(deps: GatewayDeps = Depends(get_deps)) -> RedirectResponse:
    """Shopify's thank-you redirect: back to the frontend, which re-reads the credits."""
    url = deps.settings.frontend_url
    return RedirectResponse(f"{url}{'&' if '?' in url else '?'}checkout=complete", status_code=302)


@router.post("/api/welcome-matcha/claim", responses={401: {"description": "NOT_AUTHENTICATED"}})
async def welcome_claim(request: Request, deps: GatewayDeps = Depends(get_deps)) -> JSONResponse:
    """The welcome credits of a signed-in customer, once per pass id (UPSTREAM.md 2.2).

    The pass id is always `pass:user:<uid>` of the verified token (a header or body id is not used;
    the edge has refused one naming another customer). The grant is the same `welcome:<pass_id>` as
    the automatic welcome, so a customer gets one or the other, and one from before this product
    gets neither."""
    request.state.failure_code = "INTERNAL"
    rid = request_id(request)
    user = (await caller_of(request, deps)).user
    if user is None:
        return JSONResponse(legacy_body("NOT_AUTHENTICATED", "Sign in to claim your welcome matcha.", rid),
                            status_code=401)
    pass_id = f"pass:user:{user.user_id}"
    request.state.pass_id = pass_id
    claimed = await deps.bus.request(ClaimWelcome(
        pass_id=pass_id, user_id=user.user_id, email=user.email if user.email_verified else None, request_id=rid,
    ), WelcomeClaimed)
    body: dict[str, object] = {"ok": True, "requestId": rid, "passId": pass_id}
    if claimed.outcome == "applied":
        body["credited"] = claimed.credited
    else:
        body["alreadyClaimed"] = True
        if claimed.outcome != "duplicate":
            body["reason"] = "NOT_ELIGIBLE" if claimed.outcome == "ineligible" else "WELCOME_OFF"
    body.update(balance=claimed.balance, expiresAt=iso(claimed.expires_at))
    return JSONResponse(body)
