"""Legacy core routes of ROUTES.md: health, stats, auth, credits, sessions, history, feedback, log-error."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from fastapi import APIRouter, Depends, Query, Request

from libs.errors import ForbiddenError, InvalidInputError, MmaError, NotFoundError, UnauthorizedError
from libs.schemas import (
    AdminSummary,
    CustomerEvents,
    CustomerHistory,
    CustomerView,
    DeleteResult,
    EventList,
    FeedbackRecorded,
    GenerationView,
    GetGeneration,
    HistoryPage,
    OpsLogged,
    SessionStarted,
    SoftDeleteHistory,
    SummaryView,
    new_id,
)
from services.gateway.access import caller_of, is_admin
from services.gateway.bodies import Body, PassFields, first
from services.gateway.deps import GatewayDeps
from services.gateway.identity import PASS_HEADER, Identity, json_body, normalize_pass_id, resolve
from services.gateway.routes.common import ensure_customer, failure_code, get_deps, identity, request_id
from services.gateway.routes.mma import record_event
from services.gateway.views import iso

router = APIRouter(tags=["legacy"])
log = structlog.get_logger("gateway")


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def live_credits(view: CustomerView) -> int:
    """Expired credits read as 0."""
    if view.expires_at is not None and view.expires_at < datetime.now(UTC):
        return 0
    return view.credits


@router.get("/health")
async def health(request: Request, deps: GatewayDeps = Depends(get_deps)) -> dict[str, Any]:
    """Liveness of the HTTP surface; `supabase` = the ledger (our database) answers."""
    reachable = True
    try:
        await deps.bus.request(GetGeneration(generation_id="health-check"), GenerationView, timeout=2.0)
    except NotFoundError:
        pass
    except MmaError:
        reachable = False
    return {"ok": True, "service": "mina-mind-gateway", "time": now_iso(), "supabase": reachable,
            "env": deps.settings.env, "requestId": request_id(request)}


@router.get("/public/stats/total-users")
async def total_users(deps: GatewayDeps = Depends(get_deps)) -> dict[str, Any]:
    try:
        summary = await deps.bus.request(AdminSummary(), SummaryView, timeout=3.0)
    except MmaError:
        return {"ok": True, "totalUsers": 0, "source": "mega", "degraded": True}
    return {"ok": True, "totalUsers": summary.total_customers, "source": "mega"}


@router.post("/auth/shopify-sync")
async def shopify_sync(request: Request, deps: GatewayDeps = Depends(get_deps)) -> dict[str, Any]:
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
             who: Identity = Depends(identity)) -> dict[str, Any]:
    """`isAdmin`: the admin token or an allowlisted user (`mg_admin_allowlist`)."""
    if who.token_invalid:
        raise UnauthorizedError("Invalid or expired token.", code="INVALID_TOKEN")
    user = {"id": who.user.user_id, "email": who.user.email} if who.user else None
    admin = who.user is not None and await is_admin(request, deps)
    return {"ok": True, "user": user, "isAdmin": admin, "passId": who.pass_id, "requestId": request_id(request)}


@router.get("/credits/balance", dependencies=[Depends(failure_code("CREDITS_FAILED"))])
async def credits_balance(request: Request, deps: GatewayDeps = Depends(get_deps),
                          who: Identity = Depends(identity)) -> dict[str, Any]:
    """`balance`, never a top-level `credits` (the client evaluates `credits ?? balance`)."""
    view = await ensure_customer(deps, who)
    s = deps.settings
    return {"ok": True, "requestId": request_id(request), "passId": who.pass_id, "balance": live_credits(view),
            "expiresAt": iso(view.expires_at), "source": "mega", "customerId": who.pass_id, "historyLength": 0,
            "meta": {"imageCost": s.price_still_create, "motionCost": s.price_video_animate}}


class SessionBody(PassFields):
    platform: str | None = None
    title: str | None = None
    meta: dict[str, Any] | None = None


@router.post("/sessions/start", dependencies=[Depends(failure_code("SESSION_FAILED"))])
async def sessions_start(request: Request, body: SessionBody | None = None, deps: GatewayDeps = Depends(get_deps),
                         who: Identity = Depends(identity)) -> dict[str, Any]:
    body = body or SessionBody()
    await ensure_customer(deps, who)
    session_id = new_id()
    msg = SessionStarted(session_id=session_id, pass_id=who.pass_id, platform=first(body.platform) or "web",
                         title=first(body.title) or "Mina session", meta=body.meta or {})
    await deps.bus.publish(msg)
    return {"ok": True, "requestId": request_id(request), "passId": who.pass_id, "sessionId": session_id,
            "session_id": session_id,
            "session": {"id": session_id, "platform": msg.platform, "title": msg.title,
                        "createdAt": msg.at.isoformat(), "customerId": who.pass_id}}


def _caller_conflicts(request: Request, target: str) -> bool:
    """A header or verified Bearer naming another pass id than the one read (a non-anon target
    is one the edge already proved the Bearer's)."""
    header = normalize_pass_id(request.headers.get(PASS_HEADER))
    if header is not None and header != target:
        return True
    user = getattr(request.state, "user", None)
    admin = getattr(request.state, "admin_token", False)
    return (user is not None and not admin and target.startswith("pass:anon:")
            and f"pass:user:{user.user_id}" != target and header != target)


def _parse_cursor(cursor: str | None) -> datetime | None:
    if not cursor:
        return None
    try:
        parsed = datetime.fromisoformat(cursor.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidInputError("cursor must be an ISO time.", code="INVALID_CURSOR") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def _history(request: Request, deps: GatewayDeps, pass_id: str, limit: int, cursor: str | None,
                   ) -> dict[str, Any]:
    if _caller_conflicts(request, pass_id):
        raise ForbiddenError("You can only read your own history.", code="FORBIDDEN")
    request.state.pass_id = pass_id
    limit = max(1, min(limit, 500))
    page = await deps.bus.request(CustomerHistory(pass_id=pass_id, limit=limit, cursor=_parse_cursor(cursor)),
                                  HistoryPage)
    generations = [{
        "id": g.generation_id, "generationId": g.generation_id, "type": g.type or "image", "mode": g.mode,
        "sessionId": g.session_id, "passId": g.pass_id, "platform": g.platform, "prompt": g.prompt,
        "outputUrl": g.output_url, "createdAt": iso(g.created_at), "meta": g.meta, "mg_mma_vars": g.vars,
        "status": g.status, "parentId": g.parent_id,
    } for g in page.generations]
    feedbacks = [{
        "id": f.feedback_id, "passId": f.pass_id, "resultType": f.result_type, "platform": f.platform,
        "prompt": f.prompt, "comment": f.comment, "imageUrl": f.image_url, "videoUrl": f.video_url,
        "createdAt": iso(f.created_at),
    } for f in page.feedbacks]
    sessions = [{"id": s.session_id, "sessionId": s.session_id, "platform": s.platform, "title": s.title,
                 "createdAt": iso(s.created_at)} for s in page.sessions]
    credit_history = [{"id": t.txn_id, "delta": t.delta, "reason": t.reason, "source": t.source,
                       "refType": t.ref_type, "refId": t.ref_id, "generationId": t.generation_id,
                       "createdAt": iso(t.created_at)} for t in page.credit_txns]
    expires = page.expires_at
    balance = 0 if expires is not None and expires < datetime.now(UTC) else page.credits
    return {
        "ok": True, "requestId": request_id(request), "passId": pass_id, "customerId": pass_id,
        "passIdsChecked": [pass_id],
        "credits": {"balance": balance, "expiresAt": iso(expires), "history": credit_history},
        "page": {"limit": limit, "cursor": cursor, "nextCursor": iso(page.next_cursor), "hasMore": page.has_more,
                 "returned": len(generations)},
        "sessions": sessions, "generations": generations, "feedbacks": feedbacks,
    }


@router.get("/history/pass/{pass_id}", dependencies=[Depends(failure_code("HISTORY_FAILED"))])
async def history_pass(pass_id: str, request: Request, limit: int = Query(200), cursor: str | None = None,
                       deps: GatewayDeps = Depends(get_deps)) -> dict[str, Any]:
    """A customer's generations, sessions and feedback, newest first."""
    target = normalize_pass_id(pass_id)
    if target is None:
        raise InvalidInputError("A pass id is required.", code="MISSING_PASS_ID")
    return await _history(request, deps, target, limit, cursor)


@router.get("/history", dependencies=[Depends(failure_code("HISTORY_FAILED"))])
async def history_query(request: Request, customerId: str | None = None, passId: str | None = None,
                        limit: int = Query(200), cursor: str | None = None,
                        deps: GatewayDeps = Depends(get_deps)) -> dict[str, Any]:
    target = normalize_pass_id(customerId) or normalize_pass_id(passId) or normalize_pass_id(
        request.headers.get(PASS_HEADER))
    if target is None:
        raise InvalidInputError("customerId is required.", code="MISSING_CUSTOMER_ID")
    return await _history(request, deps, target, limit, cursor)


@router.delete("/history/{item_id}", dependencies=[Depends(failure_code("HISTORY_DELETE_FAILED"))])
async def history_delete(item_id: str, request: Request, deps: GatewayDeps = Depends(get_deps),
                         who: Identity = Depends(identity)) -> dict[str, Any]:
    """Soft-deletes only a row of the caller's own pass id; anything else reads `deleted:false`."""
    count = 0
    if who.source != "minted":
        result = await deps.bus.request(SoftDeleteHistory(pass_id=who.pass_id, id=item_id), DeleteResult)
        count = result.deleted_count
    return {"ok": True, "requestId": request_id(request), "deleted": count > 0, "deletedCount": count}


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


@router.post("/feedback/like", dependencies=[Depends(failure_code("FEEDBACK_FAILED"))])
async def feedback_like(request: Request, body: FeedbackBody | None = None, deps: GatewayDeps = Depends(get_deps),
                        who: Identity = Depends(identity)) -> dict[str, Any]:
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


class LogErrorBody(Body):
    code: str | None = None
    message: str | None = None
    stack: str | None = None
    url: str | None = None
    userAgent: str | None = None
    userId: str | None = None
    email: str | None = None
    extra: Any = None


@router.post("/api/log-error")
async def log_error(request: Request, deps: GatewayDeps = Depends(get_deps)) -> dict[str, Any]:
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
