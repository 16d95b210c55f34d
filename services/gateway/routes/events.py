"""A customer's reactions: MMA events (like, dislike, download, preference_set, ...) and legacy feedback.

Each becomes a `CustomerEventRecorded` with the taste delta it implies (hard blocks, tag
weights), which the ledger stores and folds into the customer's preferences.
"""

from __future__ import annotations

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from libs.errors import MmaError
from libs.schemas import (
    CustomerEventRecorded,
    CustomerEvents,
    CustomerView,
    EventList,
    EventType,
    FeedbackRecorded,
    GetCustomer,
    new_id,
)
from services.gateway.auth.identity import Identity
from services.gateway.bodies import EventBody, PassFields, first
from services.gateway.deps import GatewayDeps
from services.gateway.routes.common import ensure_customer, failure_code, get_deps, identity, mma_identity, request_id

router = APIRouter(tags=["events"])
log = structlog.get_logger("gateway")

TAG_STEPS = {EventType.LIKE.value: 1.0, EventType.DOWNLOAD.value: 1.0, EventType.DISLIKE.value: -1.0}


class EventOut(BaseModel):
    event_id: str
    status: str
    ok: bool
    requestId: str
    eventId: str
    passId: str
    preferences: dict[str, object]


class FeedbackBody(PassFields):
    generationId: str | None = None
    generation_id: str | None = None
    resultType: str | None = None
    platform: str | None = None
    prompt: str | None = None
    comment: str | None = None
    imageUrl: str | None = None
    videoUrl: str | None = None
    sessionId: str | None = None
    liked: bool | None = None


def preference_delta(event_type: str, payload: dict[str, object]) -> tuple[list[str], dict[str, float]]:
    """What an event changes in the taste snapshot: hard blocks and tag weights."""
    blocks: list[str] = []
    weights: dict[str, float] = {}
    hard = payload.get("hard_block") or payload.get("hard_blocks")
    if event_type == EventType.PREFERENCE_SET and hard:
        blocks = [str(b) for b in (hard if isinstance(hard, list) else [hard]) if b]
    tags = payload.get("tags")
    tag_list = [str(t) for t in (tags if isinstance(tags, list) else [tags] if tags else []) if t]
    step = TAG_STEPS.get(event_type)
    if step is not None:
        weights = {tag: step for tag in tag_list}
    return blocks, weights


async def record_event(deps: GatewayDeps, pass_id: str, event_type: str, generation_id: str | None,
                       payload: dict[str, object], req_id: str) -> str:
    event_id = new_id()
    blocks, weights = preference_delta(event_type, payload)
    await deps.bus.publish(CustomerEventRecorded(
        event_id=event_id, pass_id=pass_id, event_type=event_type, generation_id=generation_id, payload=payload,
        add_hard_blocks=blocks, tag_weight_deltas=weights, request_id=req_id,
    ))
    return event_id


@router.post("/mma/events", response_model=EventOut)
async def post_event(request: Request, body: EventBody | None = None, deps: GatewayDeps = Depends(get_deps),
                     who: Identity = Depends(mma_identity)) -> JSONResponse:
    """like, dislike, download, preference_set, create, tweak, feedback: an event row + a taste delta."""
    request.state.failure_code = "MMA_EVENT_FAILED"
    body = body or EventBody()
    event_type = (body.event_type or body.type or "").strip().lower() or EventType.UNKNOWN.value
    payload = body.payload or {}
    event_id = await record_event(deps, who.pass_id, event_type, body.generation_id or body.generationId, payload,
                                  request_id(request))
    view = await deps.bus.request(GetCustomer(pass_id=who.pass_id), CustomerView)
    return JSONResponse({"event_id": event_id, "status": "ok", "ok": True, "requestId": request_id(request),
                         "eventId": event_id, "passId": who.pass_id, "preferences": view.preferences})


@router.post("/feedback/like", dependencies=[Depends(failure_code("FEEDBACK_FAILED"))])
async def feedback_like(request: Request, body: FeedbackBody | None = None, deps: GatewayDeps = Depends(get_deps),
                        who: Identity = Depends(identity)) -> dict[str, object]:
    """A `feedback` row, and a like event so the taste window learns from it."""
    body = body or FeedbackBody()
    await ensure_customer(deps, who)
    feedback_id = new_id()
    generation_id = first(body.generationId, body.generation_id)
    result_type = "motion" if (body.resultType or "").lower() in ("motion", "video") else "image"
    liked = body.liked is not False
    await deps.bus.publish(FeedbackRecorded(
        feedback_id=feedback_id, pass_id=who.pass_id, generation_id=generation_id, session_id=body.sessionId,
        result_type=result_type, platform=body.platform, prompt=body.prompt, comment=body.comment,
        image_url=body.imageUrl, video_url=body.videoUrl, liked=liked,
    ))
    payload = {"result_type": result_type, "url": body.videoUrl or body.imageUrl, "prompt": body.prompt,
               "source": "feedback_like", "feedback_id": feedback_id}
    await record_event(deps, who.pass_id, "like" if liked else "dislike", generation_id,
                       {k: v for k, v in payload.items() if v is not None}, request_id(request))
    likes = 0
    try:
        events = await deps.bus.request(CustomerEvents(pass_id=who.pass_id, limit=1000), EventList, timeout=3.0)
        likes = sum(1 for e in events.events if e.event_type == "like")
    except MmaError:
        log.info("gateway.likes_count_unavailable", pass_id=who.pass_id)
    return {"ok": True, "requestId": request_id(request), "passId": who.pass_id, "feedbackId": feedback_id,
            "message": "Feedback saved.",
            "payload": {"customerId": who.pass_id, "resultType": result_type, "platform": body.platform,
                        "sessionId": body.sessionId, "generationId": generation_id},
            "totals": {"likesForCustomer": likes}}
