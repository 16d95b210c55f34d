"""Who the caller is: the Supabase sign-in turning into a pass id, and `/me`."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from libs.errors import UnauthorizedError
from services.gateway.auth.access import caller_of, is_admin
from services.gateway.auth.identity import Identity
from services.gateway.deps import GatewayDeps
from services.gateway.routes.common import ensure_customer, get_deps, identity, request_id

router = APIRouter(tags=["auth"])


@router.post("/auth/shopify-sync")
async def shopify_sync(request: Request, deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """A verified Supabase user becomes `pass:user:<uid>`; no or bad token: not logged in."""
    user = (await caller_of(request, deps)).user
    if user is None:
        return {"ok": True, "loggedIn": False, "requestId": request_id(request)}
    pass_id = f"pass:user:{user.user_id}"
    request.state.pass_id = pass_id
    request.state.failure_code = "SHOPIFY_SYNC_FAILED"
    view = await ensure_customer(deps, Identity(pass_id=pass_id, source="jwt", user=user))
    return {"ok": True, "loggedIn": True, "passId": pass_id, "pass_id": pass_id, "email": user.email,
            "isNewUser": view.created, "requestId": request_id(request)}


@router.get("/me")
async def me(request: Request, deps: GatewayDeps = Depends(get_deps),
             who: Identity = Depends(identity)) -> dict[str, object]:
    """`isAdmin`: the admin token or an allowlisted user (`mg_admin_allowlist`)."""
    if who.token_invalid:
        raise UnauthorizedError("Invalid or expired token.", code="INVALID_TOKEN")
    user = {"id": who.user.user_id, "email": who.user.email} if who.user else None
    admin = who.user is not None and await is_admin(request, deps)
    return {"ok": True, "user": user, "isAdmin": admin, "passId": who.pass_id, "requestId": request_id(request)}
