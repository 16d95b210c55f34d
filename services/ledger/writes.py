"""What each event writes: the statement rows of an independent event, or the apply of an
order-sensitive one (a read-modify-write of a generation, a conditional effect).

`handlers` runs them: one event per transaction, or a batch of them set-based (`staging`).
"""

from __future__ import annotations

from pydantic import JsonValue

from libs.errors import InvalidMessageError
from libs.schemas import (
    MMA_VARS_VERSION,
    CustomerEventRecorded,
    EventType,
    FeedbackRecorded,
    GenerationAccepted,
    GenerationDone,
    GenerationFailed,
    OpsLogged,
    ScanLine,
    SessionStarted,
    StatusChanged,
    StepPhase,
    StepRecorded,
    status_can_move,
)
from services.ledger import queries as q
from services.ledger.adapters.pg import Conn, Row
from services.ledger.deps import LedgerDeps
from services.ledger.ends import EndAction, end_action
from services.ledger.pool import fingertips_vars
from services.ledger.queries import Rows
from services.ledger.views import merge_vars, with_scan_line

SCAN_LINES_MAX = 1000
STEP_STATUS = {StepPhase.STARTED: "pending", StepPhase.SUCCEEDED: "succeeded", StepPhase.FAILED: "failed"}


def _initial_vars(msg: GenerationAccepted) -> dict[str, JsonValue]:
    """The canonical variable map as far as the request tells (the pipeline fills the rest)."""
    req = msg.request
    assets: dict[str, JsonValue] = {
        "product_image_id": req.assets.product_image_url,
        "logo_image_id": req.assets.logo_image_url,
        "inspiration_image_ids": list(req.assets.inspiration_image_urls),
        "style_hero_image_id": req.assets.style_hero_image_url,
        "input_still_image_id": req.assets.input_still_image_url,
        "input_still_generation_id": req.assets.input_still_generation_id,
        "end_image_id": req.assets.end_image_url,
    }
    inputs = {
        "userBrief": req.inputs.user_brief,
        "style": req.inputs.style,
        "motion_user_brief": req.inputs.motion_user_brief,
        "movement_style": req.inputs.movement_style,
        "aspect_ratio": req.inputs.aspect_ratio,
        "type_for_me": req.inputs.type_for_me,
        "suggest_only": req.inputs.suggest_only,
        "duration_s": req.inputs.duration_s,
    }
    return {
        "version": MMA_VARS_VERSION,
        "mode": msg.flow.mode,
        "assets": {k: v for k, v in assets.items() if v not in (None, [])},
        "inputs": {k: v for k, v in inputs.items() if v not in (None, "")},
        "feedback": req.feedback.model_dump(),
        "history": {"vision_intelligence": req.vision_intelligence},
        **fingertips_vars(msg),
    }


# --------------------------------------------------------------------------- independent events
# Each of these is a list of (statement, args) rows of idempotent statements. One event runs
# its rows in one transaction; a batch runs them grouped by statement, set-based (`staging`).


def accepted_rows(msg: GenerationAccepted) -> Rows:
    mode = msg.flow.mode
    meta: dict[str, JsonValue] = {"flow": msg.flow.value, "price": msg.price, "request_id": msg.request_id}
    if msg.pool is not None:
        meta["pool"] = msg.pool.model_dump()
    if msg.request.settings:
        meta["settings_overrides"] = dict(msg.request.settings)
    parent = f"generation:{msg.parent_generation_id}" if msg.parent_generation_id else None
    return [
        (q.ENSURE_CUSTOMER, (msg.pass_id,)),
        (q.UPSERT_ACCEPTED, (msg.generation_id, msg.pass_id, msg.session_id, parent, msg.platform,
                             "motion" if mode == "video" else "image", "video" if mode == "video" else "image", mode,
                             _initial_vars(msg), meta, msg.at)),
    ]


def status_rows(msg: StatusChanged) -> Rows:
    return [
        (q.ENSURE_CUSTOMER, (msg.pass_id,)),
        (q.MOVE_STATUS, (msg.generation_id, msg.pass_id, msg.status.value, msg.status.mg_status, msg.at,
                         q.STATUS_ORDER_VALUES)),
    ]


def step_rows(msg: StepRecorded) -> Rows:
    return [
        (q.ENSURE_CUSTOMER, (msg.pass_id,)),
        (q.ENSURE_GENERATION, (msg.generation_id, msg.pass_id, msg.at)),
        (q.UPSERT_STEP, (msg.generation_id, msg.pass_id, msg.step_no, msg.step_type, msg.provider, msg.model,
                         msg.latency_ms, msg.payload, STEP_STATUS[msg.phase], msg.at)),
    ]


def session_rows(msg: SessionStarted) -> Rows:
    return [
        (q.ENSURE_CUSTOMER, (msg.pass_id,)),
        (q.INSERT_SESSION, (msg.session_id, msg.pass_id, msg.platform, msg.title, msg.meta, msg.at)),
    ]


def feedback_rows(msg: FeedbackRecorded) -> Rows:
    return [
        (q.ENSURE_CUSTOMER, (msg.pass_id,)),
        (q.INSERT_FEEDBACK, (msg.feedback_id, msg.pass_id, msg.generation_id, msg.session_id, msg.result_type,
                             msg.platform, msg.prompt, msg.comment, msg.image_url, msg.video_url,
                             {"liked": msg.liked}, msg.at)),
    ]


def ops_rows(msg: OpsLogged) -> Rows:
    """The actor is named in mg_detail; mg_actor_pass_id only when it is a stored customer (query)."""
    detail: dict[str, JsonValue] = {"level": msg.level, **msg.detail}
    if msg.actor_pass_id:
        detail.setdefault("actor_pass_id", msg.actor_pass_id)
    return [(q.INSERT_ADMIN_LOG, (msg.msg_id(), msg.level, msg.actor_pass_id, msg.route, msg.method,
                                  msg.http_status, detail, msg.at))]


# --------------------------------------------------------------------------- order-sensitive events
# Read-modify-write of a generation's vars, or a conditional effect: run one by one, in stream order.


async def _locked_generation(conn: Conn, msg: ScanLine | GenerationDone | GenerationFailed) -> Row:
    """The generation's row, locked for the rest of the transaction; created first if this event came
    before any other of its generation (the usual row exists: one statement instead of three)."""
    row = await conn.fetchrow(q.LOCK_GENERATION, msg.generation_id)
    if row is not None:
        return row
    await conn.execute(q.ENSURE_CUSTOMER, msg.pass_id)
    await conn.execute(q.ENSURE_GENERATION, msg.generation_id, msg.pass_id, msg.at)
    row = await conn.fetchrow(q.LOCK_GENERATION, msg.generation_id)
    assert row is not None  # ensured just above, in this transaction
    return row


async def apply_scan_line(conn: Conn, msg: ScanLine, _deps: LedgerDeps) -> None:
    """Persisted at once, so a reload replays what the customer was told."""
    if not 0 <= msg.index < SCAN_LINES_MAX:
        raise InvalidMessageError(f"scan line index {msg.index} out of range")
    row = await _locked_generation(conn, msg)
    await conn.execute(q.SET_VARS, msg.generation_id, with_scan_line(row["mg_mma_vars"] or {}, msg.index, msg.text))


async def apply_done(conn: Conn, msg: GenerationDone, deps: LedgerDeps) -> None:
    """Final row; the merge keeps scan lines already persisted, status never moves back, and an end
    stored before it stays unless the stream says this one came first (`ends`)."""
    row = await _locked_generation(conn, msg)
    action = await end_action(row, msg, deps.bus)
    if action is EndAction.IGNORE:
        return
    merged = merge_vars(row["mg_mma_vars"] or {}, msg.vars)
    current = row["mg_mma_status"]
    if action is EndAction.APPLY and current != msg.status.value and not status_can_move(current, msg.status.value):
        await conn.execute(q.SET_VARS, msg.generation_id, merged)
        return
    content_type = {"image": "image", "motion": "video", "text": "text"}[msg.content_type]
    await conn.execute(
        q.FINISH_GENERATION, msg.generation_id, msg.status.value, msg.status.mg_status, merged,
        msg.output_url, msg.output_key, msg.prompt, msg.provider, msg.model,
        msg.output_url if msg.content_type == "image" else None,
        msg.output_url if msg.content_type == "motion" else None,
        content_type,
    )


def _step_error(msg: GenerationFailed) -> dict[str, JsonValue]:
    error: dict[str, JsonValue] = {"error_code": msg.code, "message": msg.message}
    for key in ("provider_http_status", "retry"):
        if msg.detail.get(key) is not None:
            error[key] = msg.detail[key]
    return error


def _ops_detail(msg: GenerationFailed) -> dict[str, JsonValue]:
    detail: dict[str, JsonValue] = {"level": "error", **msg.detail}
    detail.update(generation_id=msg.generation_id, pass_id=msg.pass_id, error_code=msg.code,
                  message=msg.message, step_type=msg.step_type)
    return detail


async def apply_failed(conn: Conn, msg: GenerationFailed, deps: LedgerDeps) -> None:
    """Both log planes in one transaction: generation + step (run), error row (ops)."""
    raw_http = msg.detail.get("http")
    http: dict[str, JsonValue] = raw_http if isinstance(raw_http, dict) else {}
    route = msg.detail.get("route") or http.get("route")
    http_status = http.get("status") if isinstance(http.get("status"), int) else None
    row = await _locked_generation(conn, msg)
    action = await end_action(row, msg, deps.bus)
    if action is EndAction.IGNORE:
        return
    merged = merge_vars(row["mg_mma_vars"] or {}, msg.vars)
    current = row["mg_mma_status"]
    if action is EndAction.REPLACE or current == msg.status.value or status_can_move(current, msg.status.value):
        await conn.execute(q.FAIL_GENERATION, msg.generation_id, msg.status.value, msg.status.mg_status,
                           merged, msg.message)
    else:
        await conn.execute(q.SET_VARS, msg.generation_id, merged)
    if msg.step_no is not None:
        await conn.execute(q.SET_STEP_ERROR, msg.generation_id, msg.step_no, _step_error(msg))
    elif msg.step_type:
        await conn.execute(q.SET_STEP_ERROR_BY_TYPE, msg.generation_id, msg.step_type, _step_error(msg))
    await conn.execute(
        q.INSERT_ADMIN_LOG, f"error:{msg.generation_id}", "error", msg.pass_id, route,
        msg.detail.get("method"), http_status, _ops_detail(msg), msg.at,
    )


async def apply_customer_event(conn: Conn, msg: CustomerEventRecorded, _deps: LedgerDeps) -> None:
    """The preference delta applies only with the newly inserted event row: once per event id."""
    hard_blocks = list(msg.add_hard_blocks)
    payload_block = msg.payload.get("hard_block")
    if msg.event_type == EventType.PREFERENCE_SET and isinstance(payload_block, str) and payload_block:
        hard_blocks.append(payload_block)
    meta = {"event_type": msg.event_type, "payload": msg.payload, "request_id": msg.request_id}
    await conn.execute(q.ENSURE_CUSTOMER, msg.pass_id)
    inserted = await conn.fetchval(q.INSERT_EVENT, msg.event_id, msg.pass_id, msg.generation_id, meta, msg.at)
    if inserted is not None and (hard_blocks or msg.tag_weight_deltas):
        await conn.execute(q.APPLY_PREFERENCE_DELTA, msg.pass_id, hard_blocks, dict(msg.tag_weight_deltas))

