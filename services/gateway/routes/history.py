"""A customer's past: sessions, the history page (generations, feedback, credits) and soft deletes."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Depends, Query, Request

from libs.errors import ForbiddenError, InvalidInputError
from libs.schemas import (
    CustomerHistory,
    DeleteResult,
    HistoryPage,
    SessionStarted,
    SoftDeleteHistory,
    new_id,
)
from services.gateway.auth.identity import PASS_HEADER, Identity, normalize_pass_id
from services.gateway.bodies import PassFields, first
from services.gateway.deps import GatewayDeps
from services.gateway.generations.views import iso
from services.gateway.routes.common import ensure_customer, failure_code, get_deps, identity, request_id

router = APIRouter(tags=["history"])


class SessionBody(PassFields):
    platform: str | None = None
    title: str | None = None
    meta: dict[str, object] | None = None


@router.post("/sessions/start", dependencies=[Depends(failure_code("SESSION_FAILED"))])
async def sessions_start(request: Request, body: SessionBody | None = None, deps: GatewayDeps = Depends(get_deps),
                         who: Identity = Depends(identity)) -> dict[str, object]:
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
                   ) -> dict[str, object]:
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
        "status": g.status, "parentId": g.parent_id, "mg_mma_mode": g.mode,
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
@router.get("/history/customer/{pass_id}", dependencies=[Depends(failure_code("HISTORY_FAILED"))])  # until 2025-12-16
async def history_pass(pass_id: str, request: Request, limit: int = Query(200), cursor: str | None = None,
                       deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    """A customer's generations, sessions and feedback, newest first."""
    target = normalize_pass_id(pass_id)
    if target is None:
        raise InvalidInputError("A pass id is required.", code="MISSING_PASS_ID")
    return await _history(request, deps, target, limit, cursor)


@router.get("/history", dependencies=[Depends(failure_code("HISTORY_FAILED"))])
async def history_query(request: Request, customerId: str | None = None, passId: str | None = None,
                        limit: int = Query(200), cursor: str | None = None,
                        deps: GatewayDeps = Depends(get_deps)) -> dict[str, object]:
    target = normalize_pass_id(customerId) or normalize_pass_id(passId) or normalize_pass_id(
        request.headers.get(PASS_HEADER))
    if target is None:
        raise InvalidInputError("customerId is required.", code="MISSING_CUSTOMER_ID")
    return await _history(request, deps, target, limit, cursor)


@router.delete("/history/{item_id}", dependencies=[Depends(failure_code("HISTORY_DELETE_FAILED"))])
async def history_delete(item_id: str, request: Request, deps: GatewayDeps = Depends(get_deps),
                         who: Identity = Depends(identity)) -> dict[str, object]:
    """Soft-deletes only a row of the caller's own pass id; anything else reads `deleted:false`."""
    count = 0
    if who.source != "minted":
        result = await deps.bus.request(SoftDeleteHistory(pass_id=who.pass_id, id=item_id), DeleteResult)
        count = result.deleted_count
    return {"ok": True, "requestId": request_id(request), "deleted": count > 0, "deletedCount": count}
