"""Top-ups in (the Shopify webhook) and the N-only routes we answer with real, small behaviour."""

from __future__ import annotations

import base64
from mimetypes import guess_type
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from libs.errors import InvalidInputError, NotFoundError
from libs.schemas import ShopifyOrder, ShopifyOrderResult
from services.gateway.deps import GatewayDeps
from services.gateway.identity import Identity
from services.gateway.routes.common import ensure_customer, get_deps, identity, request_id
from services.gateway.views import generation_out, iso

router = APIRouter(tags=["billing"])


@router.post("/api/credits/shopify-order")
async def shopify_order(request: Request, deps: GatewayDeps = Depends(get_deps)) -> dict[str, Any]:
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


@router.post("/api/checkout/create", status_code=503)
async def checkout_create(request: Request, who: Identity = Depends(identity)) -> JSONResponse:
    """N's draft-order checkout needs the Shopify Admin API, which this backend does not hold."""
    return JSONResponse({"ok": False, "error": "CHECKOUT_NOT_CONFIGURED",
                         "message": "Checkout is not available here; buy credits in the Mina shop.",
                         "requestId": request_id(request)}, status_code=503)


@router.post("/api/welcome-matcha/claim")
async def welcome_claim(request: Request, deps: GatewayDeps = Depends(get_deps),
                        who: Identity = Depends(identity)) -> dict[str, Any]:
    """The welcome credits, once per pass id (a repeated claim changes nothing)."""
    request.state.failure_code = "WELCOME_CLAIM_FAILED"
    view = await ensure_customer(deps, who)
    return {"ok": True, "requestId": request_id(request), "passId": who.pass_id, "claimed": view.created,
            "balance": view.credits}


@router.post("/mma/generations/{generation_id}/refresh")
async def refresh_generation(generation_id: str, deps: GatewayDeps = Depends(get_deps)) -> JSONResponse:
    """Re-read a generation (the ledger is always current; nothing to re-fetch from a provider)."""
    try:
        out = await generation_out(deps.bus, generation_id)
    except NotFoundError:
        return JSONResponse({"error": "NOT_FOUND", "message": "Unknown generation."}, status_code=404)
    return JSONResponse(out.model_dump(mode="json"))


@router.get("/public/download")
async def public_download(request: Request, url: str | None = None,
                          deps: GatewayDeps = Depends(get_deps)) -> Response:
    """Download one of our stored assets as an attachment (never a proxy for other hosts)."""
    if not url:
        raise InvalidInputError("url is required.", code="MISSING_URL")
    if not deps.store.is_ours(url):
        raise InvalidInputError("Only Mina assets can be downloaded here.", code="INVALID_URL")
    try:
        data = await deps.store.get_bytes(url)
    except InvalidInputError as exc:
        raise NotFoundError("Asset not found.", code="NOT_FOUND") from exc
    name = url.rsplit("/", 1)[-1] or "download"
    return Response(data, media_type=guess_type(name)[0] or "application/octet-stream",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})
