"""The MMA generation routes: create / tweak / animate, read one, cancel or refresh it, follow it over SSE."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from libs.errors import ForbiddenError, InvalidInputError, NotFoundError
from libs.schemas import CancelRequested, Flow, GenerationRequest, GenerationView, Prices
from services.gateway.adapters.decisions import wait_until_stored
from services.gateway.adapters.idempotency import body_hash
from services.gateway.auth.access import sse_url_for
from services.gateway.auth.identity import Identity, header, json_body, state_of
from services.gateway.bodies import CreateCommon, StillCreateBody, TweakBody, VideoAnimateBody
from services.gateway.deps import GatewayDeps
from services.gateway.errors import mma_body
from services.gateway.generations.control import already_finished, owner_and_state, queue_info
from services.gateway.generations.sse import SseStream, parse_last_event_id
from services.gateway.generations.submit import CreateCommand, Outcome, follow_outcome, submit
from services.gateway.generations.views import TERMINAL, GenerationOut, current_view, generation_out
from services.gateway.routes.common import admin_token_ok, get_deps, identity, mma_identity, request_id

router = APIRouter(tags=["mma"])


class CreateOut(BaseModel):
    generation_id: str
    status: str
    sse_url: str
    generationId: str
    id: str
    sseUrl: str


class ErrorBody(BaseModel):
    error: str
    message: str | None = None
    details: dict[str, object] | None = None


class CancelOut(BaseModel):
    generation_id: str
    status: str


CREATE_RESPONSES: dict[int | str, dict[str, object]] = {
    402: {"model": ErrorBody, "description": "INSUFFICIENT_CREDITS"},
    404: {"model": ErrorBody, "description": "parent generation not found (tweaks)"},
    409: {"model": ErrorBody, "description": "IDEMPOTENCY_CONFLICT or DEADLINE_EXCEEDED"},
    429: {"description": "RATE_LIMITED"},
}


def queued(generation_id: str, sse_url: str) -> dict[str, str]:
    return {"generation_id": generation_id, "status": "queued", "sse_url": sse_url,
            "generationId": generation_id, "id": generation_id, "sseUrl": sse_url}


def costs(prices: Prices) -> dict[str, int]:
    return {"still": prices.still_create, "video": prices.video_animate, "still_create": prices.still_create,
            "still_tweak": prices.still_tweak, "video_animate": prices.video_animate,
            "video_tweak": prices.video_tweak}


async def digest(request: Request, flow: Flow, parent: str | None) -> str:
    """Hash of what was asked (route + canonical body), so a reused key with a new body is a 409."""
    body = await json_body(request)
    return body_hash(orjson.dumps({"flow": flow.value, "parent": parent, "body": body},
                                  option=orjson.OPT_SORT_KEYS))


def lane_of(body: CreateCommon) -> str:
    """The still lane the client asked for (`inputs.still_lane` or `inputs.lane`), `main` by default."""
    inputs = getattr(body, "inputs", None)
    lane = getattr(inputs, "still_lane", None) or getattr(inputs, "lane", None)
    return str(lane or "main")


async def create_caller(request: Request) -> tuple[GatewayDeps, Identity]:
    """The deps and the caller of a create, called in the route rather than as FastAPI dependencies:
    each dependency costs the create path more than its own work (docs/bench.md, the accept profile)."""
    deps: GatewayDeps = request.app.state.deps
    return deps, await mma_identity(request, deps)


async def run_create(request: Request, deps: GatewayDeps, who: Identity, body: CreateCommon, flow: Flow,
                     req: GenerationRequest, parent: str | None) -> Response:
    key = header(request, b"idempotency-key") or body.idem_key()
    cmd = CreateCommand(
        pass_id=who.pass_id, flow=flow, request=req, request_id=request_id(request), parent_generation_id=parent,
        session_id=body.session(), platform=req.inputs.platform or "web", source="mma", deadline=body.deadline,
        idempotency_key=key, body_digest=await digest(request, flow, parent) if key else "",
    )
    outcome = await submit(deps, cmd)
    return await decision_response(deps, outcome, lane_of(body), who.pass_id)


async def decision_response(deps: GatewayDeps, outcome: Outcome, lane: str, pass_id: str) -> Response:
    rejected = outcome.rejected
    if rejected is None:
        return Response(orjson.dumps(queued(outcome.generation_id, sse_url_for(deps, outcome.generation_id, pass_id))),
                        media_type="application/json")
    if rejected.code == "INSUFFICIENT_CREDITS":
        details = {
            "userMessage": rejected.message, "balance": rejected.balance, "needed": rejected.price, "lane": lane,
            "costs": costs(await deps.prices.get()), "canSwitchToMain": False,
            "actions": [{"type": "buy_credits", "label": "Get more credits"}],
        }
        body = mma_body("INSUFFICIENT_CREDITS", "INSUFFICIENT_CREDITS", details,
                        generation_id=outcome.generation_id)
        return JSONResponse(body, status_code=402)
    status = 409 if rejected.code == "DEADLINE_EXCEEDED" else 400
    return JSONResponse(mma_body(rejected.code, rejected.message, generation_id=outcome.generation_id),
                        status_code=status)


async def parent_of(deps: GatewayDeps, generation_id: str, failed_code: str) -> GenerationView:
    """The parent as the customer last saw it: done on SSE counts even before the ledger projected it."""
    try:
        return await current_view(deps.bus, generation_id)
    except NotFoundError as exc:
        raise NotFoundError("PARENT_GENERATION_NOT_FOUND", code=failed_code) from exc


@router.post("/mma/still/create", response_model=CreateOut, responses=CREATE_RESPONSES)
async def still_create(request: Request, body: StillCreateBody | None = None) -> Response:
    """Start a still generation; answers at once with the id and the SSE URL (or 402)."""
    state_of(request)["failure_code"] = "MMA_CREATE_FAILED"
    deps, who = await create_caller(request)
    body = body or StillCreateBody()
    return await run_create(request, deps, who, body, Flow.STILL_CREATE, body.to_request(), None)


@router.post("/mma/still/{generation_id}/tweak", response_model=CreateOut, responses=CREATE_RESPONSES)
async def still_tweak(generation_id: str, request: Request, body: TweakBody | None = None) -> Response:
    """A NEW still generation whose parent is `generation_id`."""
    state_of(request)["failure_code"] = "MMA_TWEAK_FAILED"
    deps, who = await create_caller(request)
    body = body or TweakBody()
    await parent_of(deps, generation_id, "MMA_TWEAK_FAILED")
    return await run_create(request, deps, who, body, Flow.STILL_TWEAK, body.to_request(motion=False), generation_id)


@router.post("/mma/video/animate", response_model=CreateOut, responses=CREATE_RESPONSES)
async def video_animate(request: Request, body: VideoAnimateBody | None = None) -> Response:
    """Animate a still (a generation id or an image URL) into a video, or only suggest its motion."""
    state_of(request)["failure_code"] = "MMA_ANIMATE_FAILED"
    deps, who = await create_caller(request)
    body = body or VideoAnimateBody()
    req = body.to_request()
    parent = body.still_generation()
    if parent:
        still = await parent_of(deps, parent, "MMA_ANIMATE_FAILED")
        if not req.assets.input_still_image_url and still.output_url:
            req = req.model_copy(update={"assets": req.assets.model_copy(
                update={"input_still_image_url": still.output_url})})
    if not req.assets.input_still_image_url:
        raise InvalidInputError("A start image (start_image_url or a still generation id) is required.",
                                code="MISSING_START_IMAGE")
    return await run_create(request, deps, who, body, Flow.VIDEO_ANIMATE, req, parent)


@router.post("/mma/video/{generation_id}/tweak", response_model=CreateOut, responses=CREATE_RESPONSES)
async def video_tweak(generation_id: str, request: Request, body: TweakBody | None = None) -> Response:
    """A NEW video generation whose parent is the tweaked video."""
    state_of(request)["failure_code"] = "MMA_VIDEO_TWEAK_FAILED"
    deps, who = await create_caller(request)
    body = body or TweakBody()
    await parent_of(deps, generation_id, "MMA_VIDEO_TWEAK_FAILED")
    return await run_create(request, deps, who, body, Flow.VIDEO_TWEAK, body.to_request(motion=True), generation_id)


# `identity` only names the caller in `X-Mina-Pass-Id`: the edge already checked who may read
@router.get("/mma/generations/{generation_id}", response_model=GenerationOut,
            responses={404: {"model": ErrorBody}}, dependencies=[Depends(identity)])
async def get_generation(generation_id: str, deps: GatewayDeps = Depends(get_deps)) -> JSONResponse:
    """One generation: state, canonical vars, outputs, prompt and error."""
    await wait_until_stored(deps.fanout, deps.decisions, generation_id)  # a create answered a moment ago
    try:
        out = await generation_out(deps.bus, generation_id)
    except NotFoundError:
        return JSONResponse({"error": "NOT_FOUND", "message": "Unknown generation."}, status_code=404)
    body = out.model_dump(mode="json")
    if out.state == "queued":
        queue = await queue_info(deps.bus, generation_id, deps.settings.queue_estimate_window)
        if queue is not None:
            body["queue"] = queue
    return JSONResponse(body)


@router.post("/mma/generations/{generation_id}/cancel", response_model=CancelOut,
             responses={202: {"model": CancelOut, "description": "cancel requested, the run is stopping"},
                        403: {"model": ErrorBody}, 404: {"model": ErrorBody},
                        409: {"model": ErrorBody, "description": "ALREADY_FINISHED"}})
async def cancel_generation(generation_id: str, request: Request, deps: GatewayDeps = Depends(get_deps),
                            who: Identity = Depends(identity)) -> JSONResponse:
    """Stop a generation (its owner's pass id, or the admin token): 200 `cancelled` once it stopped,
    202 `cancelling` while the run is still stopping (SSE sends the final `cancelled`)."""
    request.state.failure_code = "MMA_CANCEL_FAILED"
    try:
        owner, state = await owner_and_state(deps.bus, generation_id)
    except NotFoundError as exc:
        raise NotFoundError("Unknown generation.", generation_id=generation_id) from exc
    admin = admin_token_ok(request)
    if not admin and who.pass_id != owner:
        raise ForbiddenError("This generation belongs to another customer.", code="FORBIDDEN")
    if state in TERMINAL:
        raise already_finished(generation_id, state)
    await deps.bus.publish(CancelRequested(generation_id=generation_id, pass_id=owner,
                                           requested_by="admin" if admin else "owner",
                                           request_id=request_id(request)))
    outcome = await follow_outcome(deps.bus, generation_id, deps.settings.decision_timeout_s,
                                   terminal_timeout_s=deps.settings.cancel_wait_s)
    ended = outcome.terminal
    if ended is None:
        return JSONResponse({"generation_id": generation_id, "status": "cancelling"}, status_code=202)
    if ended.status.value != "cancelled":  # it finished on its own before the cancel took effect
        raise already_finished(generation_id, ended.status.value)
    return JSONResponse({"generation_id": generation_id, "status": "cancelled"})


@router.post("/mma/generations/{generation_id}/refresh",
             responses={403: {"description": "FORBIDDEN"}, 404: {"description": "NOT_FOUND"}})
async def refresh_generation(generation_id: str, request: Request, deps: GatewayDeps = Depends(get_deps),
                             who: Identity = Depends(mma_identity)) -> JSONResponse:
    """UPSTREAM.md 2.3 on our design: the ledger (with the stream's end laid over it) is always current,
    so there is nothing to re-fetch from a provider; the answer says what the customer can have now.

    `refreshed` is always false; a finished generation answers `alreadyDone` with its permanent URL,
    any other its `status` (also as `provider_status`, the old key)."""
    request.state.failure_code = "REFRESH_FAILED"
    try:
        view = await current_view(deps.bus, generation_id)
    except NotFoundError:
        return JSONResponse({"ok": False, "error": "NOT_FOUND", "message": "Unknown generation."}, status_code=404)
    if view.pass_id != who.pass_id and not admin_token_ok(request):
        return JSONResponse({"ok": False, "error": "FORBIDDEN",
                             "message": "This generation belongs to another customer."}, status_code=403)
    if view.output_url:
        return JSONResponse({"ok": True, "refreshed": False, "alreadyDone": True, "url": view.output_url,
                             "status": view.status})
    body: dict[str, object] = {"ok": True, "refreshed": False, "alreadyDone": False, "status": view.status,
                               "provider_status": view.status}
    if view.error:
        body["message"] = view.error
    return JSONResponse(body)


@router.get("/mma/stream/{generation_id}", response_class=SseStream, status_code=200,
            responses={200: {"content": {"text/event-stream": {}},
                             "description": "scan_line, status, done, error (+cancelled) events"}})
async def stream(generation_id: str, request: Request, deps: GatewayDeps = Depends(get_deps)) -> SseStream:
    """Server-sent events of one generation, replayed from the start or after `Last-Event-ID`."""
    after = parse_last_event_id(request.headers.get("last-event-id") or request.query_params.get("lastEventId"))
    await wait_until_stored(deps.fanout, deps.decisions, generation_id)  # a create answered a moment ago
    return SseStream(deps.bus, deps.fanout, generation_id, after, ping_s=deps.sse_ping_s,
                     queue_window=deps.settings.queue_estimate_window)
