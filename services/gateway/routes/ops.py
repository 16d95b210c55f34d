"""The gateway's own health and metrics (the other services serve theirs from `libs.service`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.gateway.deps import GatewayDeps
from services.gateway.routes.common import get_deps

router = APIRouter(tags=["ops"])


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
