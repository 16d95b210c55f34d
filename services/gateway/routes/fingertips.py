"""Fingertips (the studio's image-editing tools): answered as not available until they run on the bus."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from services.gateway.auth.identity import Identity
from services.gateway.routes.common import identity, request_id

router = APIRouter(tags=["fingertips"])


@router.post("/fingertips/generate", status_code=503)
async def fingertips(request: Request, who: Identity = Depends(identity)) -> JSONResponse:
    return JSONResponse({"ok": False, "error": "FINGERTIPS_NOT_AVAILABLE",
                         "message": "Fingertips is not available on this server.",
                         "requestId": request_id(request)}, status_code=503)
