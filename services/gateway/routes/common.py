"""Dependencies every route module shares: deps, identity, request id, failure codes."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Depends, Request

from libs.errors import MmaError, ServiceUnavailableError, UnauthorizedError
from libs.schemas import CustomerView, EnsureWelcome
from services.gateway.deps import GatewayDeps
from services.gateway.identity import Identity, bearer_token, resolve


# Dependencies are `async def` on purpose: FastAPI runs a plain `def` dependency in its
# thread pool, and that hand-off cost more than the whole create route (bench profile).
async def get_deps(request: Request) -> GatewayDeps:
    deps: GatewayDeps = request.app.state.deps
    return deps


def request_id(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


def failure_code(code: str) -> Callable[[Request], Coroutine[Any, Any, None]]:
    """Route dependency: the code an unexpected failure of this route answers with (ROUTES.md)."""

    async def mark(request: Request) -> None:
        request.state.failure_code = code

    return mark


async def identity(request: Request, deps: GatewayDeps = Depends(get_deps)) -> Identity:
    return await resolve(request, deps.settings)


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
    """
    if _ensured_key(who) not in deps.ensured:
        await ensure_customer(deps, who)


def mma_identity() -> Callable[..., Coroutine[Any, Any, Identity]]:
    """MMA POSTs: resolve the pass id and ensure the customer (failure: MMA_PASSID_MW_FAILED, 503 while a
    service restarts, else 500)."""

    async def dep(request: Request, deps: GatewayDeps = Depends(get_deps)) -> Identity:
        who = await resolve(request, deps.settings)
        try:
            await ensure_customer_once(deps, who)
        except ServiceUnavailableError as exc:  # a dependency restarting: 503 + Retry-After, never a 500
            raise ServiceUnavailableError(f"Could not resolve the customer: {exc.message}",
                                          code="MMA_PASSID_MW_FAILED") from exc
        except MmaError as exc:
            raise MmaError(f"Could not resolve the customer: {exc.message}", code="MMA_PASSID_MW_FAILED") from exc
        return who

    return dep


def admin_token_ok(request: Request, deps: GatewayDeps) -> bool:
    """`Authorization: Bearer <MMA_ADMIN_TOKEN>`, compared in constant time."""
    token = bearer_token(request)
    expected = deps.settings.admin_token
    return token is not None and expected is not None and hmac.compare_digest(
        token.encode(), expected.get_secret_value().encode()
    )


async def require_admin(request: Request, deps: GatewayDeps = Depends(get_deps)) -> None:
    """Admin routes: 401 without the admin token."""
    if not admin_token_ok(request, deps):
        raise UnauthorizedError("Unauthorized")
