"""Rows to reply models, and the pure merges the projection needs (no I/O here)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import JsonValue

from libs.schemas import (
    ConfigEntry,
    CreditTxnView,
    CustomerView,
    ErrorView,
    EventView,
    FeedbackView,
    GenerationView,
    SessionView,
    StepView,
)
from services.ledger.adapters.pg import Row


def strip_prefix(mg_id: str | None, prefix: str) -> str | None:
    if mg_id is None:
        return None
    return mg_id.removeprefix(f"{prefix}:")


def effective_credits(credits: int | None, expires_at: datetime | None) -> int:
    """Expired credits read as 0; the stored balance stays the sum of the ledger deltas."""
    if expires_at is not None and expires_at < datetime.now(UTC):
        return 0
    return int(credits or 0)


def merge_vars(base: Mapping[str, JsonValue], incoming: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
    """Deep merge of two variable maps, `incoming` winning on scalars.

    Lists of scan lines merge by index, so lines persisted one by one survive a final map
    that was built before the last line was stored (or that carries none at all).
    """
    merged: dict[str, JsonValue] = dict(base)
    for key, value in incoming.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_vars(current, value)
        elif key == "scan_lines" and isinstance(current, list) and isinstance(value, list):
            size = max(len(current), len(value))
            merged[key] = [
                value[i] if i < len(value) and value[i] is not None else (current[i] if i < len(current) else None)
                for i in range(size)
            ]
        else:
            merged[key] = value
    return merged


def with_scan_line(vars_: Mapping[str, Any], index: int, text: str) -> dict[str, Any]:
    """`vars_` with userMessages.scan_lines[index] = text (padding earlier gaps with null)."""
    user_messages = dict(vars_.get("userMessages") or {})
    lines = list(user_messages.get("scan_lines") or [])
    while len(lines) <= index:
        lines.append(None)
    lines[index] = text
    user_messages["scan_lines"] = lines
    return {**vars_, "userMessages": user_messages}


# The original backend's generation rows carry only mg_status; its words map onto ours.
LEGACY_STATUS = {"succeeded": "done", "success": "done", "completed": "done", "done": "done",
                 "failed": "error", "error": "error", "cancelled": "cancelled", "canceled": "cancelled"}


def generation_status(mma_status: str | None, mg_status: str | None) -> str:
    """mg_mma_status when this product wrote the row; a legacy row (no mg_mma_status) reads its
    mg_status, so a delivered old result is `done` rather than forever `queued`."""
    if mma_status:
        return mma_status
    if mg_status:
        return LEGACY_STATUS.get(mg_status.strip().lower(), mg_status)
    return "queued"


def customer_view(row: Row | None, pass_id: str, created: bool = False) -> CustomerView:
    if row is None:
        return CustomerView(pass_id=pass_id, credits=0, created=False)
    return CustomerView(
        pass_id=row["mg_pass_id"],
        credits=effective_credits(row["mg_credits"], row["mg_expires_at"]),
        expires_at=row["mg_expires_at"],
        created=created,
        preferences=row["mg_mma_preferences"] or {},
        email=row["mg_email"],
        user_id=str(row["mg_user_id"]) if row["mg_user_id"] is not None else None,
        last_active=row["mg_last_active"],
        created_at=row["mg_created_at"],
    )


def generation_view(row: Row) -> GenerationView:
    return GenerationView(
        generation_id=row["mg_generation_id"] or strip_prefix(row["mg_id"], "generation") or "",
        pass_id=row["mg_pass_id"] or "",
        parent_id=strip_prefix(row["mg_parent_id"], "generation"),
        session_id=row["mg_session_id"],
        mode=row["mg_mma_mode"],
        type=row["mg_type"],
        status=generation_status(row["mg_mma_status"], row["mg_status"]),
        mg_status=row["mg_status"],
        error=row["mg_error"],
        prompt=row["mg_prompt"],
        output_url=row["mg_output_url"],
        output_key=row["mg_output_key"],
        provider=row["mg_provider"],
        model=row["mg_model"],
        platform=row["mg_platform"],
        vars=row["mg_mma_vars"] or {},
        meta=row["mg_meta"] or {},
        created_at=row["mg_created_at"],
        updated_at=row["mg_updated_at"],
    )


def step_view(row: Row) -> StepView:
    return StepView(
        step_no=row["mg_step_no"],
        step_type=row["mg_step_type"],
        status=row["mg_status"],
        provider=row["mg_provider"],
        model=row["mg_model"],
        latency_ms=row["mg_latency_ms"],
        payload=row["mg_payload"] or {},
        created_at=row["mg_created_at"],
    )


def session_view(row: Row) -> SessionView:
    return SessionView(
        session_id=row["mg_session_id"] or strip_prefix(row["mg_id"], "session") or "",
        platform=row["mg_platform"],
        title=row["mg_title"],
        created_at=row["mg_created_at"],
    )


def feedback_view(row: Row) -> FeedbackView:
    return FeedbackView(
        feedback_id=strip_prefix(row["mg_id"], "feedback") or "",
        pass_id=row["mg_pass_id"] or "",
        result_type=row["mg_result_type"],
        platform=row["mg_platform"],
        prompt=row["mg_prompt"],
        comment=row["mg_comment"],
        image_url=row["mg_image_url"],
        video_url=row["mg_video_url"],
        created_at=row["mg_created_at"],
    )


def credit_txn_view(row: Row) -> CreditTxnView:
    return CreditTxnView(
        txn_id=strip_prefix(row["mg_id"], "credit_transaction") or "",
        delta=row["mg_delta"] or 0,
        reason=row["mg_reason"],
        source=row["mg_source"],
        ref_type=row["mg_ref_type"],
        ref_id=row["mg_ref_id"],
        generation_id=row["mg_generation_id"],
        created_at=row["mg_created_at"],
    )


def event_view(row: Row) -> EventView:
    meta = row["mg_meta"] or {}
    return EventView(
        event_id=strip_prefix(row["mg_id"], "mma_event") or "",
        event_type=str(meta.get("event_type") or "unknown"),
        generation_id=row["mg_generation_id"],
        payload=meta.get("payload") or {},
        created_at=row["mg_created_at"],
    )


# Columns of the original backend's error logger (production only), folded into the detail.
LEGACY_ERROR_COLUMNS = {"mg_error_code": "error_code", "mg_error_message": "message", "mg_error_stack": "stack"}


def error_view(row: Row) -> ErrorView:
    raw = row["mg_detail"]
    detail: dict[str, object] = dict(raw) if isinstance(raw, Mapping) else ({} if raw is None else {"value": raw})
    for column, key in LEGACY_ERROR_COLUMNS.items():
        value = row.get(column)
        if value is not None and key not in detail:
            detail[key] = value
    return ErrorView(
        id=row["mg_id"],
        level=row["mg_record_type"],
        actor_pass_id=row["mg_actor_pass_id"],
        route=row["mg_route"],
        method=row["mg_method"],
        http_status=row["mg_status"],
        detail=detail,
        created_at=row["mg_created_at"],
    )


def config_entry(row: Row) -> ConfigEntry:
    """An unversioned legacy row is version 0; a value that is not an object is wrapped, never a 500."""
    value = row["mg_value"]
    if value is None:
        value = {}
    elif not isinstance(value, dict):
        value = {"value": value}
    return ConfigEntry(key=row["mg_key"], version=row["version"] or 0, id=row["mg_id"], value=value)
