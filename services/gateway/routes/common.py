"""Dependencies every route module shares: deps, identity, request id, failure codes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from fastapi import Depends, Request

from libs.errors import MmaError, ServiceUnavailableError, UnauthorizedError
from libs.schemas import CustomerView, EnsureWelcome
from services.gateway.auth.identity import Identity, resolve, state_of
from services.gateway.deps import GatewayDeps

log = structlog.get_logger("gateway")


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in its
# thread pool, and that hand-off cost more than the whole create route (bench profile).
async def get_deps(request: Request) -> GatewayDeps:
    deps: GatewayDeps = request.app.state.deps
    return deps


def request_id(request: Request) -> str:
    return str(state_of(request).get("request_id") or "")


def failure_code(code: str) -> Callable[[Request], Awaitable[None]]:
    """Route dependency: the code an unexpected failure of this route answers with (ROUTES.md)."""

    async def mark(request: Request) -> None:
        request.state.failure_code = code

    return mark


async def identity(request: Request) -> Identity:
    """The caller's pass id; `services.gateway.auth.access.edge` has already refused one the token does not prove."""
    return await resolve(request)


def _ensured_key(who: Identity) -> str:
    """A pass id ensured anonymously is ensured again once a user comes with it (that links them)."""
    user = who.user
    return f"{who.pass_id}\n{user.user_id}\n{user.email or ''}" if user else who.pass_id


async def ensure_customer(deps: GatewayDeps, who: Identity) -> CustomerView:
    """The customer row (billing grants the welcome credits once)."""
    view = await deps.bus.request(EnsureWelcome(
        pass_id=who.pass_id, user_id=who.user.user_id if who.user else None,
        email=who.user.email if who.user else None,
    ), CustomerView)
    deps.ensured.add(_ensured_key(who))
    return view


async def ensure_customer_once(deps: GatewayDeps, who: Identity) -> None:
    """`ensure_customer` unless this process did it for the same caller in the last minutes.

    For routes that need the row to exist but not its contents: a repeat create skips the
    gateway -> billing -> ledger round trip (billing still refuses a create without credit).
    Requests of one caller that arrive while its ensure is on the way wait for that one (a new
    customer's first page fires several at once) instead of each sending its own.
    """
    key = _ensured_key(who)
    if key in deps.ensured:
        return
    pending = deps.ensuring.get(key)
    if pending is None:
        pending = asyncio.ensure_future(ensure_customer(deps, who))
        deps.ensuring[key] = pending
        pending.add_done_callback(lambda done: _ensure_settled(deps, key, done))
    await asyncio.shield(pending)  # a caller that goes away does not take the others' ensure with it


def _ensure_settled(deps: GatewayDeps, key: str, done: asyncio.Future[CustomerView]) -> None:
    deps.ensuring.pop(key, None)
    if not done.cancelled():
        done.exception()  # retrieved: every waiter may have gone away


async def mma_identity(request: Request, deps: GatewayDeps = Depends(get_deps)) -> Identity:
    """MMA POSTs: resolve the pass id and ensure the customer (failure: 500 MMA_PASSID_MW_FAILED).

    Billing or the ledger restarting (503) does not fail the request: the command is durable,
    the ledger creates the row on its first write, and billing decides the welcome credits when
    the command arrives (services/billing/welcome.py).
    """
    who = await resolve(request)
    try:
        await ensure_customer_once(deps, who)
    except ServiceUnavailableError as exc:
        log.warning("gateway.ensure_deferred", pass_id=who.pass_id, error=exc.message)
    except MmaError as exc:
        raise MmaError(f"Could not resolve the customer: {exc.message}", code="MMA_PASSID_MW_FAILED") from exc
    return who


def admin_token_ok(request: Request) -> bool:
    """`Authorization: Bearer <MMA_ADMIN_TOKEN>`, as the edge compared it (in constant time)."""
    return bool(getattr(request.state, "admin_token", False))


async def require_admin(request: Request) -> None:
    """Admin routes: the edge let only the admin token or an allowlisted user through; this
    refuses anything that reached an admin router without that decision."""
    if not getattr(request.state, "admin", False):
        raise UnauthorizedError("Unauthorized")


UNAUTHORIZED: dict[int | str, dict[str, object]] = {401: {"description": '{error:"Unauthorized"}'}}
