"""The one identity rule, at the gateway's edge, for every route (issue #15, ROUTES.md decisions).

`edge` is an app-wide dependency: it runs before any route dependency or handler, so a
refused request reads, charges, writes and publishes nothing. What it checks is the
route's `Access` in `ROUTE_ACCESS` (docs/routes.md "Who may call what" restates it, and
tests/docs checks that the two agree):

- a `pass:user:`, `pass:email:` or `pass:shopify:` id named anywhere in the request (body,
  `X-Mina-Pass-Id`, query, path) is honoured only with a verified token of that customer
  (its user id, its verified email, or a Shopify id linked to it in mega_customers, which
  the ledger tells over the bus) or the admin token: otherwise 401 (no or bad token) or
  403 (another customer's). `pass:anon:` ids stay bearer secrets.
- a generation owned by such an id is read, streamed, tweaked, animated, cancelled or
  refreshed only by its owner (or the admin token); a stream or read may also carry the
  grant its create answer put in `sse_url` (an EventSource cannot send headers).
- admin routes: the admin token, or a verified user with `mg_admin_allowlist`.

`identity_relaxed` (a migration window, off by default) lets an unproven id through,
logged and counted in `mina_identity_relaxed_total`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import structlog
from fastapi import Request
from prometheus_client import Counter

from libs.bus import Bus
from libs.errors import ForbiddenError, InvalidInputError, NotFoundError, UnauthorizedError
from libs.final import last_event
from libs.schemas import CustomerAccess, GenerationAccepted, GenerationView, GetCustomerAccess, GetGeneration
from services.gateway.adapters.decisions import wait_until_stored
from services.gateway.adapters.supabase import JwtUser
from services.gateway.auth.identity import (
    BODY_KEYS,
    PASS_HEADER_KEY,
    QUERY_KEYS,
    bearer_token,
    header,
    json_body,
    normalize_pass_id,
    state_of,
)

if TYPE_CHECKING:
    from services.gateway.deps import GatewayDeps

log = structlog.get_logger("gateway")

RELAXED = Counter("mina_identity_relaxed_total", "requests let through unproven by MMA_IDENTITY_RELAXED", ["route"])
GRANT_TTL_S = 24 * 3600
FACTS_TTL_S = 30.0
STILL_KEYS = ("input_still_generation_id", "still_generation_id")


class Access(StrEnum):
    OPEN = "open"  # nothing of a customer's: health, pages, assets, public stats
    CUSTOMER = "customer"  # every pass id named must be the caller's
    OWNER = "owner"  # and so must the generation it names (path, or the still an animate starts from)
    SIGN_IN = "sign_in"  # the token alone says who calls (a pass id sent beside it is not used)
    REPORT = "report"  # an unproven pass id is dropped, not refused (crash reports)
    ADMIN = "admin"  # admin token or an allowlisted user
    WEBHOOK = "webhook"  # its own proof: the Shopify HMAC
    SIGNED = "signed"  # its own proof: an HMAC-signed, expiring URL


A = Access
ROUTE_ACCESS: dict[str, Access] = {
    "POST /mma/still/create": A.CUSTOMER, "POST /mma/still/{generation_id}/tweak": A.OWNER,
    "POST /mma/video/animate": A.OWNER, "POST /mma/video/{generation_id}/tweak": A.OWNER,
    "GET /mma/generations/{generation_id}": A.OWNER, "POST /mma/generations/{generation_id}/cancel": A.OWNER,
    "GET /mma/stream/{generation_id}": A.OWNER, "POST /mma/events": A.CUSTOMER,
    "POST /mma/generations/{generation_id}/refresh": A.OWNER,
    "GET /mma/admin/errors": A.ADMIN, "GET /mma/admin/steps/{generation_id}": A.ADMIN, "GET /mma/admin/steps": A.ADMIN,
    "GET /health": A.OPEN, "GET /public/stats/total-users": A.OPEN, "POST /auth/shopify-sync": A.SIGN_IN,
    "GET /me": A.CUSTOMER, "GET /credits/balance": A.CUSTOMER, "POST /sessions/start": A.CUSTOMER,
    "GET /history/pass/{pass_id}": A.CUSTOMER, "GET /history": A.CUSTOMER, "DELETE /history/{item_id}": A.CUSTOMER,
    "POST /feedback/like": A.CUSTOMER, "POST /api/log-error": A.REPORT,
    "POST /editorial/generate": A.CUSTOMER, "POST /motion/suggest": A.CUSTOMER, "POST /motion/generate": A.CUSTOMER,
    "POST /api/r2/upload-signed": A.CUSTOMER, "PUT /api/r2/put/{key:path}": A.SIGNED,
    "POST /api/r2/store-remote-signed": A.CUSTOMER, "POST /api/r2/upload-dataurl": A.CUSTOMER,
    "POST /store-remote-generation": A.CUSTOMER, "POST /api/upload": A.CUSTOMER, "GET /assets/{key:path}": A.OPEN,
    "GET /public/download": A.OPEN, "POST /api/credits/shopify-order": A.WEBHOOK,
    "POST /api/checkout/create": A.CUSTOMER, "GET /checkout/return": A.OPEN,
    "POST /api/welcome-matcha/claim": A.CUSTOMER, "POST /fingertips/generate": A.CUSTOMER,
    "GET /fingertips/generations/{generation_id}": A.OWNER, "GET /fingertips/pool": A.CUSTOMER,
    "GET /fingertips/models": A.OPEN,
    "GET /history/customer/{pass_id}": A.CUSTOMER, "POST /api/r2/upload": A.CUSTOMER,
    "POST /api/r2/store-remote": A.CUSTOMER, "POST /mma/motion/suggest": A.CUSTOMER,
    "GET /api/runtime-config": A.ADMIN, "PUT /api/runtime-config": A.ADMIN,
    "GET /admin/summary": A.ADMIN, "GET /admin/customers": A.ADMIN, "GET /admin/mega/parity": A.ADMIN,
    "GET /admin/config/runtime": A.ADMIN, "POST /admin/credits/adjust": A.ADMIN, "POST /credits/add": A.ADMIN,
    "GET /billing/settings": A.ADMIN, "POST /billing/settings": A.ADMIN,
    "GET /ops/api/generations": A.ADMIN, "GET /ops/api/generations/{generation_id}": A.ADMIN,
    "GET /ops/api/generations/{generation_id}/chain": A.ADMIN,
    "GET /ops/api/generations/{generation_id}/credits": A.ADMIN, "GET /ops/api/errors": A.ADMIN,
    "GET /ops/api/reconcile": A.ADMIN, "GET /ops/api/dead-letters": A.ADMIN, "GET /ops/api/summary": A.ADMIN,
    "GET /ops/api/config": A.ADMIN, "POST /ops/api/config": A.ADMIN,
    "GET /studio": A.OPEN, "GET /ops": A.OPEN, "GET /ui/{name}": A.OPEN,
    "GET /healthz": A.OPEN, "GET /readyz": A.OPEN, "GET /metrics": A.OPEN,
}


@dataclass(frozen=True)
class Caller:
    user: JwtUser | None  # the verified token's user
    admin_token: bool


class AccessFacts:
    """The ledger's `CustomerAccess` answers, reused for `FACTS_TTL_S` (a link or allowlist change
    takes effect within it)."""

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str | None, str | None], tuple[float, CustomerAccess]] = {}

    async def get(self, bus: Bus, user: JwtUser, shopify_id: str | None = None) -> CustomerAccess:
        email = user.email if user.email_verified else None
        key = (user.user_id, email, shopify_id)
        now = time.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        facts = await bus.request(GetCustomerAccess(user_id=user.user_id, email=email,
                                                         shopify_customer_id=shopify_id), CustomerAccess)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[key] = (now + FACTS_TTL_S, facts)
        return facts


def _admin_token_matches(token: str | None, deps: GatewayDeps) -> bool:
    expected = deps.settings.admin_token
    return token is not None and expected is not None and hmac.compare_digest(
        token.encode(), expected.get_secret_value().encode())


async def caller_of(request: Request, deps: GatewayDeps) -> Caller:
    """The Bearer token, verified once per request (the admin token is never sent to Supabase)."""
    state = state_of(request)
    cached: Caller | None = state.get("caller")
    if cached is not None:
        return cached
    token = bearer_token(request)
    admin = _admin_token_matches(token, deps)
    user = await deps.verifier.verify(token) if token and not admin else None
    caller = Caller(user=user, admin_token=admin)
    state["caller"], state["user"], state["admin_token"] = caller, user, admin
    return caller


async def proves(deps: GatewayDeps, user: JwtUser, pass_id: str) -> bool:
    """Whether the verified user is the customer `pass_id` names."""
    kind, _, value = pass_id.removeprefix("pass:").partition(":")
    if kind == "user":
        return value == user.user_id
    if kind == "email":
        return user.email_verified and user.email == value.lower()
    if kind == "shopify":
        return (await deps.access_facts.get(deps.bus, user, value)).shopify_linked
    return False


def _grant_sig(deps: GatewayDeps, generation_id: str, owner: str, expires: int) -> str:
    key = deps.settings.upload_signing_secret.get_secret_value().encode()
    mac = hmac.new(key, f"mma-stream-grant\n{generation_id}\n{owner}\n{expires}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()).decode().rstrip("=")


def sse_url_for(deps: GatewayDeps, generation_id: str, owner: str) -> str:
    """`/mma/stream/<id>`, with a grant for a customer's generation so an EventSource (no headers) may read it."""
    url = f"/mma/stream/{generation_id}"
    if owner.startswith("pass:anon:"):
        return url
    expires = int(time.time()) + GRANT_TTL_S
    return f"{url}?grant={expires}.{_grant_sig(deps, generation_id, owner, expires)}"


def grant_ok(request: Request, deps: GatewayDeps, generation_id: str, owner: str) -> bool:
    expires, _, sig = (request.query_params.get("grant") or "").partition(".")
    if not expires.isdigit() or int(expires) < time.time() or not sig.isascii():
        return False
    return hmac.compare_digest(sig, _grant_sig(deps, generation_id, owner, int(expires)))


def _claimed(request: Request, body: dict[str, object]) -> set[str]:
    values = [body.get(k) for k in BODY_KEYS]
    values.append(header(request, PASS_HEADER_KEY))
    if request.scope.get("query_string"):  # none on most requests: no query parsing for nothing
        params = request.query_params
        values += [params.get(k) for k in (*QUERY_KEYS, "pass_id")]
    values.append(request.path_params.get("pass_id"))
    return {p for p in (normalize_pass_id(v) for v in values) if p and not p.startswith("pass:anon:")}


def _named_generation(request: Request, body: dict[str, object]) -> str | None:
    gid = request.path_params.get("generation_id")
    if gid:
        return str(gid)
    raw = body.get("assets")
    assets: dict[str, object] = raw if isinstance(raw, dict) else {}
    for value in [assets.get(k) for k in STILL_KEYS] + [body.get("parent_generation_id"), body.get("generation_id")]:
        if isinstance(value, str) and value.strip():
            return value.strip()
    return None


def _refuse(request: Request, deps: GatewayDeps, route: str, caller: Caller, pass_id: str, why: str) -> None:
    """401 without a verified token, 403 with another customer's; or, in the migration window, let it be."""
    if deps.settings.identity_relaxed:
        RELAXED.labels(route).inc()
        log.warning("gateway.identity_relaxed_let_through", route=route, pass_id=pass_id, reason=why)
        return
    log.info("gateway.identity_refused", route=route, pass_id=pass_id, reason=why,
             authenticated=caller.user is not None)
    if caller.user is None:
        raise UnauthorizedError("Sign in to act as this customer (a valid Bearer token is required).",
                                code="NOT_AUTHENTICATED")
    raise ForbiddenError("This belongs to another customer.", code="FORBIDDEN")


async def owner_of(deps: GatewayDeps, generation_id: str) -> str | None:
    """The generation's pass id: its `accepted` event (no round trip), else the ledger's row."""
    accepted = await last_event(deps.bus, f"mma.evt.{generation_id}.accepted")
    if isinstance(accepted, GenerationAccepted):
        return accepted.pass_id
    try:
        return (await deps.bus.request(GetGeneration(generation_id=generation_id), GenerationView)).pass_id
    except NotFoundError:
        return None


async def _check_owner(request: Request, deps: GatewayDeps, route: str, caller: Caller, generation_id: str) -> None:
    await wait_until_stored(deps.fanout, deps.decisions, generation_id)  # a create answered a moment ago
    owner = await owner_of(deps, generation_id)
    if owner is None:
        return  # the route answers its own 404 (nothing of anyone's to read)
    if owner.startswith("pass:anon:") or caller.admin_token:
        return
    if request.method == "GET" and grant_ok(request, deps, generation_id, owner):
        return
    if caller.user is None or not await proves(deps, caller.user, owner):
        _refuse(request, deps, route, caller, owner, "generation_of_another")


async def is_admin(request: Request, deps: GatewayDeps) -> bool:
    caller = await caller_of(request, deps)
    if caller.admin_token:
        return True
    return caller.user is not None and (await deps.access_facts.get(deps.bus, caller.user)).is_admin


def route_key(request: Request) -> str:
    method = "GET" if request.method == "HEAD" else request.method
    path = getattr(request.scope.get("route"), "path", None)  # request.url only when unrouted: it costs
    return f"{method} {path if path is not None else request.url.path}"


async def edge(request: Request) -> None:
    """The identity rule of the route's `Access`, before anything else of the request runs."""
    deps: GatewayDeps = request.app.state.deps
    route = route_key(request)
    access = ROUTE_ACCESS.get(route, Access.CUSTOMER)  # a route missing from the table gets the strict rule
    if access in (Access.OPEN, Access.WEBHOOK, Access.SIGNED):
        return
    caller = await caller_of(request, deps)
    if access is Access.ADMIN:
        if not await is_admin(request, deps):
            if caller.user is None:
                raise UnauthorizedError("Unauthorized")
            raise ForbiddenError("Unauthorized", code="Unauthorized")
        request.state.admin = True
        return
    if access is Access.SIGN_IN or caller.admin_token:
        return
    body = await json_body(request)
    try:
        claimed = _claimed(request, body)
    except InvalidInputError:
        if access is not Access.REPORT:
            raise
        request.state.unproven = True  # a crash report with a malformed pass id is still worth keeping
        return
    for pass_id in sorted(claimed):
        if caller.user is not None and await proves(deps, caller.user, pass_id):
            continue
        if access is Access.REPORT:
            request.state.unproven = True  # recorded without the pass id it could not prove
            continue
        _refuse(request, deps, route, caller, pass_id, "unproven_pass_id")
    if access is Access.OWNER:
        generation_id = _named_generation(request, body)
        if generation_id:
            await _check_owner(request, deps, route, caller, generation_id)
