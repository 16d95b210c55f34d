"""Fingertips (image-editing tools) over HTTP, in the original backend's shapes (UPSTREAM.md section 1).

`POST /fingertips/generate` validates against the tool's schema, stores inline data URLs (the
masks) in the asset store, checks every other image URL through the fetch guard, then sends the
edit down the bus like any generation (billing draws from the pool, the pipeline edits, the
ledger records) and waits for its end up to `fingertips_wait_s`. An edit that outlives the wait
is answered `processing` and still finishes: `GET /fingertips/generations/<id>` reads it later.
Error bodies are `{error, message, ...}` with no `ok` key, as the frontend knows them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import time
import uuid
from datetime import datetime
from typing import Any

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from libs.errors import MmaError, NotFoundError, ServiceUnavailableError
from libs.fetch import FetchPolicy, check_customer_urls
from libs.final import final_event, last_event
from libs.fingertips import Tool, catalogue, check_inputs, tool_for
from libs.schemas import (
    FingertipsRequest,
    Flow,
    GenerationDone,
    GenerationFailed,
    GenerationRefunded,
    GenerationRequest,
    GetPool,
    PoolView,
    StepRecorded,
)
from services.gateway.auth.identity import Identity, json_body, resolve
from services.gateway.deps import GatewayDeps
from services.gateway.generations.submit import CreateCommand, Outcome, follow, submit
from services.gateway.generations.views import current_view, iso
from services.gateway.routes.common import ensure_customer_once, get_deps, identity, request_id

log = structlog.get_logger("gateway")
router = APIRouter(tags=["fingertips"])

EDIT_FAILED_MESSAGE = "Edit failed. Please try again."
PROCESSING_MESSAGE = "Still working on it. Poll /fingertips/generations/{id} for the result."
REFUND_WAIT_S = 5.0


def error(status: int, code: str, message: str | None = None, **extra: object) -> JSONResponse:
    """Upstream's router body: `{error, message, ...}`, keys with no value left out, no `ok`."""
    body: dict[str, object] = {"error": code, "message": message or code}
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status)


async def edit_identity(request: Request, deps: GatewayDeps = Depends(get_deps)) -> Identity:
    """The caller's pass id and customer row (failure: 500 FINGERTIPS_PASSID_MW_FAILED, as upstream)."""
    who = await resolve(request)
    try:
        await ensure_customer_once(deps, who)
    except ServiceUnavailableError as exc:  # the ledger creates the row on its first write
        log.warning("gateway.ensure_deferred", pass_id=who.pass_id, error=exc.message)
    except MmaError as exc:
        raise MmaError(f"Could not resolve the customer: {exc.message}", code="FINGERTIPS_PASSID_MW_FAILED") from exc
    return who


def _decode_data_url(value: str) -> tuple[bytes, str]:
    """(bytes, content type) of a base64 image data URL; ValueError for anything else."""
    head, sep, payload = value.partition(",")
    if not sep or not head.startswith("data:") or ";base64" not in head:
        raise ValueError("not a base64 data URL")
    content_type = head[5:].split(";", 1)[0].strip().lower() or "image/png"
    if not content_type.startswith("image/"):
        raise ValueError("not an image")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("bad base64") from exc
    if not data:
        raise ValueError("empty")
    return data, content_type


async def _store_inline(deps: GatewayDeps, tool: Tool, inputs: dict[str, Any], batch: str) -> dict[str, Any]:
    """Every `uri` input given as a data URL stored first and replaced by our URL
    (`fingertips/mask/<batch>_<param>.png|.jpg`); ValueError names a malformed one."""
    stored = dict(inputs)
    for key in tool.uri_keys:
        value = stored.get(key)
        if not isinstance(value, str) or not value.startswith("data:"):
            continue
        data, content_type = _decode_data_url(value)
        ext = ".png" if "png" in content_type else ".jpg"
        asset = await deps.store.put_bytes(data, folder="fingertips/mask", content_type=content_type,
                                           key=f"fingertips/mask/{batch}_{key}{ext}")
        stored[key] = asset.url
    return stored


def _pool_fields(outcome: Outcome, tool: Tool) -> dict[str, object]:
    charge = outcome.accepted.pool if outcome.accepted is not None else None
    return {"credits_cost": tool.cost, "matchas_deducted": charge.matchas_deducted if charge else 0,
            "pool_remaining": charge.pool_after if charge else None}


async def _prediction_id(deps: GatewayDeps, generation_id: str) -> str | None:
    """The tool's prediction id, once the pipeline has recorded it (its `step` events)."""
    step = await last_event(deps.bus, f"mma.evt.{generation_id}.step")
    if isinstance(step, StepRecorded):
        found = step.payload.get("output", {}).get("prediction_id") if isinstance(step.payload, dict) else None
        return str(found) if found else None
    return None


async def _refunded(deps: GatewayDeps, generation_id: str) -> bool:
    """Whether billing gave the failed edit's cost back (it follows the failure by a moment)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(REFUND_WAIT_S), contextlib.aclosing(
                follow(deps.bus, f"mma.evt.{generation_id}.refunded")) as events:
            async for _seq, msg in events:
                if isinstance(msg, GenerationRefunded):
                    return True
    return False


GENERATE_RESPONSES: dict[int | str, dict[str, object]] = {
    400: {"description": "UNKNOWN_FINGERTIPS_MODEL, MISSING_REQUIRED_INPUTS"},
    402: {"description": "INSUFFICIENT_CREDITS"}, 500: {"description": "FINGERTIPS_FAILED"},
    502: {"description": "FINGERTIPS_GENERATION_FAILED (refunded: whether its cost went back to the pool)"},
}


def _edit_vars(vars_: dict[str, Any]) -> dict[str, Any]:
    found = vars_.get("fingertips")
    return found if isinstance(found, dict) else {}


@router.post("/fingertips/generate", responses=GENERATE_RESPONSES)
async def generate(request: Request, deps: GatewayDeps = Depends(get_deps),
                   who: Identity = Depends(edit_identity)) -> JSONResponse:
    """One edit: validated, masks stored, drawn from the pool, run on the bus, answered when it ends
    (or `processing` after `fingertips_wait_s`; it still lands)."""
    started = time.perf_counter()
    body = await json_body(request)
    raw_key = body.get("modelKey") or body.get("model_key") or body.get("model")
    model_key = raw_key if isinstance(raw_key, str) and raw_key else None
    tool = tool_for(deps.settings, model_key)
    if tool is None:
        return error(400, "UNKNOWN_FINGERTIPS_MODEL", modelKey=model_key,
                     availableModels=list(catalogue(deps.settings)))
    raw_inputs = body.get("inputs")
    checked = check_inputs(tool, raw_inputs if isinstance(raw_inputs, dict) else {})
    if checked.missing:
        return error(400, "MISSING_REQUIRED_INPUTS",
                     f"Missing required inputs for {tool.label}: {', '.join(checked.missing)}",
                     modelKey=tool.key, missing=checked.missing)
    try:
        try:
            inputs = await _store_inline(deps, tool, checked.inputs, uuid.uuid4().hex)
        except ValueError:
            return error(500, "FINGERTIPS_FAILED", "INVALID_DATA_URL", modelKey=tool.key)
        urls = [str(inputs[k]) for k in tool.uri_keys if isinstance(inputs.get(k), str)]
        if any(not url.startswith(("http://", "https://")) for url in urls):
            return error(400, "INVALID_URL", "Images must be http(s) URLs or data URLs.", modelKey=tool.key)
        await check_customer_urls(urls, FetchPolicy.from_settings(deps.settings), deps.store.is_ours,
                                  deps.settings.fetch_probe_timeout_s)
        outcome = await submit(deps, CreateCommand(
            pass_id=who.pass_id, flow=Flow.FINGERTIPS, request_id=request_id(request),
            request=GenerationRequest(fingertips=FingertipsRequest(model_key=tool.key, inputs=inputs)),
            idempotency_key=request.headers.get("idempotency-key"),
        ), terminal_timeout_s=deps.settings.fingertips_wait_s)
    except MmaError as exc:
        status = exc.http_status if 400 <= exc.http_status < 500 else 500
        code = exc.instance_code if 400 <= exc.http_status < 500 else "FINGERTIPS_FAILED"
        return error(status, code, exc.message, modelKey=tool.key)
    return await _answer(deps, tool, outcome, started)


async def _answer(deps: GatewayDeps, tool: Tool, outcome: Outcome, started: float) -> JSONResponse:
    gid = outcome.generation_id
    if outcome.rejected is not None:
        if outcome.rejected.code == "INSUFFICIENT_CREDITS":
            return error(402, "INSUFFICIENT_CREDITS", modelKey=tool.key)
        return error(500, "FINGERTIPS_FAILED", outcome.rejected.code, modelKey=tool.key)
    end = outcome.terminal
    if isinstance(end, GenerationFailed):
        return error(502, "FINGERTIPS_GENERATION_FAILED", EDIT_FAILED_MESSAGE,
                     refunded=await _refunded(deps, gid), modelKey=tool.key)
    if isinstance(end, GenerationDone):
        edit = _edit_vars(end.vars)
        return JSONResponse({
            "generation_id": gid, "status": "done", "model_key": tool.key, "output_url": end.output_url,
            "prediction_id": edit.get("prediction_id"), "elapsed_ms": int((time.perf_counter() - started) * 1000),
            **_pool_fields(outcome, tool),
        })
    return JSONResponse({
        "generation_id": gid, "status": "processing", "model": tool.replicate_model, "model_key": tool.key,
        "prediction_id": await _prediction_id(deps, gid), **_pool_fields(outcome, tool),
        "message": PROCESSING_MESSAGE.format(id=gid),
    })


def _latency_ms(created: datetime | None, updated: datetime | None, status: str) -> int | None:
    if created is None or updated is None or status not in ("done", "error", "cancelled"):
        return None
    return max(0, int((updated - created).total_seconds() * 1000))


@router.get("/fingertips/generations/{generation_id}")
async def read_generation(generation_id: str, deps: GatewayDeps = Depends(get_deps)) -> JSONResponse:
    """Any generation (as upstream), read as the ledger has it, the stream's end laid over it until projected."""
    try:
        view = await current_view(deps.bus, generation_id)
    except NotFoundError:
        return JSONResponse({"error": "NOT_FOUND", "message": "Unknown generation."}, status_code=404)
    except MmaError as exc:
        return error(500, "FINGERTIPS_FETCH_FAILED", exc.message)
    edit = _edit_vars(view.vars)
    failure: dict[str, object] | None = None
    if view.status in ("error", "cancelled"):
        end = await final_event(deps.bus, generation_id)
        failure = {"code": end.code if isinstance(end, GenerationFailed) else None,
                   "message": view.error or (end.message if isinstance(end, GenerationFailed) else "Edit failed.")}
    return JSONResponse({
        "generation_id": view.generation_id, "status": view.status, "mode": view.mode,
        "model": view.model or edit.get("replicateModel"), "model_key": edit.get("modelKey"),
        "output_url": view.output_url, "error": failure,
        "latency_ms": _latency_ms(view.created_at, view.updated_at, view.status),
        "created_at": iso(view.created_at), "updated_at": iso(view.updated_at),
    })


@router.get("/fingertips/pool")
async def pool(deps: GatewayDeps = Depends(get_deps), who: Identity = Depends(identity)) -> JSONResponse:
    """The caller's fingertips pool and credits (the pass id from the query, else the header)."""
    try:
        view = await deps.bus.request(GetPool(pass_id=who.pass_id), PoolView)
    except MmaError as exc:
        return error(500, "FINGERTIPS_POOL_FAILED", exc.message)
    return JSONResponse({"ok": True, "pool": view.pool, "matchaBalance": view.balance,
                         "expiresAt": iso(view.expires_at)})


@router.get("/fingertips/models")
async def models(deps: GatewayDeps = Depends(get_deps)) -> JSONResponse:
    """The six tools: label, Replicate model, price, generations per credit, input schema."""
    return JSONResponse({"ok": True, "models": [tool.to_json() for tool in catalogue(deps.settings).values()]})
