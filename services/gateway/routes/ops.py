"""The gateway's own health and metrics (the other services serve theirs from `libs.service`), the legacy
`/health` and public stats, and the frontend's crash reports."""

from __future__ import annotations

from datetime import UTC, datetime

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from libs.errors import InvalidInputError, MmaError, NotFoundError
from libs.schemas import GenerationView, GetGeneration, OpsLogged, new_id
from services.gateway.auth.identity import Identity, json_body, resolve
from services.gateway.bodies import Body
from services.gateway.deps import GatewayDeps
from services.gateway.routes.common import get_deps, request_id

router = APIRouter(tags=["ops"])
log = structlog.get_logger("gateway")


@router.get("/healthz")
async def healthz() -> dict[str, bool]:
    return {"ok": True}


@router.get("/readyz")
async def readyz(deps: GatewayDeps = Depends(get_deps)) -> JSONResponse:
    """Ready when the bus is connected and the streams exist."""
    ready = deps.bus.is_connected and await deps.bus.streams_present()
    return JSONResponse({"ok": ready}, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response)
async def metrics() -> Response:
    """Prometheus: the process's metrics (libs.metrics: HTTP, bus), as every service exposes them."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


@router.get("/health")
async def health(request: Request, deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """Liveness of the HTTP surface; `supabase` = the ledger (our database) answers."""
    reachable = True
    try:
        await deps.bus.request(GetGeneration(generation_id="health-check"), GenerationView, timeout=2.0)
    except NotFoundError:
        pass
    except MmaError:
        reachable = False
    return {"ok": True, "service": "mina-mind-gateway", "time": datetime.now(UTC).isoformat(), "supabase": reachable,
            "env": deps.settings.env, "requestId": request_id(request)}


@router.get("/public/stats/total-users")
async def total_users(deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    try:
        summary = await deps.ledger.summary(timeout=3.0)
    except MmaError:
        return {"ok": True, "totalUsers": 0, "source": "mega", "degraded": True}
    return {"ok": True, "totalUsers": summary.total_customers, "source": "mega"}


class LogErrorBody(Body):
    code: str | None = None
    message: str | None = None
    stack: str | None = None
    url: str | None = None
    userAgent: str | None = None
    userId: str | None = None
    email: str | None = None
    extra: object = None


@router.post("/api/log-error")
async def log_error(request: Request, deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """A frontend crash report: an ops-plane row (🖥️ FRONTEND_CRASH). Always `{ok:true}`."""
    raw = await json_body(request)
    try:
        who = await resolve(request)
    except InvalidInputError:  # a crash report with a malformed pass id is still worth keeping
        who = Identity(pass_id=f"pass:anon:{new_id()}", source="minted")
    try:
        body = LogErrorBody.model_validate(raw)
    except ValueError:
        body = LogErrorBody()
    detail = {
        "emoji": "🖥️", "level": "error", "category": "FRONTEND_CRASH", "error_code": body.code or "FRONTEND_CRASH",
        "message": (body.message or "")[:2000], "request_id": request_id(request), "pass_id": who.pass_id,
        "stack": (body.stack or "")[:8000] or None, "url": body.url, "user_agent": body.userAgent,
        "user_id": body.userId, "extra": body.extra if isinstance(body.extra, dict | list | str) else None,
        "http": {"route": "/api/log-error", "status": 200},
    }
    try:
        await deps.bus.publish(OpsLogged(level="error", actor_pass_id=who.pass_id, route=body.url or "/api/log-error",
                                         method="CLIENT", http_status=200, detail=detail), attempts_s=5.0)
    except MmaError:
        log.warning("gateway.log_error_dropped", pass_id=who.pass_id)
    return {"ok": True, "requestId": request_id(request)}
