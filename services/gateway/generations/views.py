"""Reading a generation for HTTP: the ledger's row, or the EVENTS stream while it is not projected yet."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from libs.bus import Bus
from libs.errors import NotFoundError
from libs.final import final_event, last_event
from libs.schemas import (
    GenerationAccepted,
    GenerationDone,
    GenerationFailed,
    GenerationView,
    GetGeneration,
)

STATUS_LINES = {
    "queued": "Queued, starting in a moment…",
    "scanning": "Looking at your images…",
    "prompting": "Writing your prompt…",
    "generating": "Creating…",
    "postscan": "Checking the result…",
    "suggested": "Suggestion ready.",
    "done": "Done.",
    "error": "Something went wrong.",
    "cancelled": "Cancelled.",
}


TERMINAL = ("done", "suggested", "error", "cancelled")


class Outputs(BaseModel):
    seedream_image_url: str | None = None
    nanobanana_image_url: str | None = None
    nanobanana2_image_url: str | None = None
    kling_video_url: str | None = None


class ErrorOut(BaseModel):
    code: str | None = None
    message: str
    step: str | None = None


class GenerationOut(BaseModel):
    model_config = ConfigDict(extra="allow")

    generation_id: str
    status: str
    state: str
    mma_vars: dict[str, object]
    still_engine: str
    outputs: Outputs
    prompt: str | None
    error: ErrorOut | None


def as_dict(value: object) -> dict[str, Any]:
    """A JSON object of a generation's free-form `vars` (anything else reads as empty)."""
    return value if isinstance(value, dict) else {}


def status_line(state: str, vars_: dict[str, object]) -> str:
    messages = as_dict(vars_.get("userMessages"))
    if state in ("done", "suggested") and messages.get("final_line"):
        return str(messages["final_line"])
    lines = messages.get("scan_lines") or []
    if state not in ("done", "error", "suggested", "cancelled") and lines:
        last = lines[-1]
        return str(last.get("text") if isinstance(last, dict) else last)
    return STATUS_LINES.get(state, state)


def _outputs(view: GenerationView) -> Outputs:
    vars_outputs = as_dict(view.vars.get("outputs"))
    is_video = view.mode == "video" or view.type == "motion"
    return Outputs(
        seedream_image_url=vars_outputs.get("seedream_image_url") or (None if is_video else view.output_url),
        nanobanana_image_url=vars_outputs.get("nanobanana_image_url"),
        nanobanana2_image_url=vars_outputs.get("nanobanana2_image_url"),
        kling_video_url=vars_outputs.get("kling_video_url") or (view.output_url if is_video else None),
    )


async def current_view(bus: Bus, generation_id: str) -> GenerationView:
    """The ledger's row, with the stream's terminal event laid over it until the ledger has projected it.

    Before the ledger has projected the generation at all, its `accepted` event stands in for the
    row (a fast run, e.g. a motion suggestion, can be `done` on SSE by then). NotFoundError when
    neither the ledger nor the stream knows it.
    """
    try:
        view = await bus.request(GetGeneration(generation_id=generation_id), GenerationView)
    except NotFoundError:
        accepted = await last_event(bus, f"mma.evt.{generation_id}.accepted")
        if not isinstance(accepted, GenerationAccepted):
            raise
        parent = accepted.parent_generation_id
        view = GenerationView(generation_id=generation_id, pass_id=accepted.pass_id, status="queued",
                              mode=accepted.flow.mode, parent_id=f"generation:{parent}" if parent else None,
                              session_id=accepted.session_id, platform=accepted.platform)
    if view.status not in TERMINAL:
        view = await _overlay_terminal(bus, view)
    return view


async def generation_out(bus: Bus, generation_id: str) -> GenerationOut:
    """The ROUTES.md shape of a generation; NotFoundError when neither ledger nor stream knows it."""
    view = await current_view(bus, generation_id)
    error = None
    if view.status in ("error", "cancelled") or view.error:
        failed = await final_event(bus, generation_id)
        if isinstance(failed, GenerationFailed):
            error = ErrorOut(code=failed.code, message=failed.message, step=failed.step_type)
        else:
            error = ErrorOut(code=None, message=view.error or "Something went wrong.")
    engine = view.vars.get("still_engine") or (view.provider if view.mode == "still" and view.provider else None)
    parent = view.parent_id.removeprefix("generation:") if view.parent_id else None
    return GenerationOut(
        generation_id=view.generation_id, status=status_line(view.status, view.vars), state=view.status,
        mma_vars=view.vars, still_engine=str(engine or "seedream"), outputs=_outputs(view), prompt=view.prompt,
        error=error, mode=view.mode, parent_generation_id=parent, output_url=view.output_url,
        created_at=iso(view.created_at), updated_at=iso(view.updated_at),
    )


async def _overlay_terminal(bus: Bus, view: GenerationView) -> GenerationView:
    """The ledger projects a moment after SSE says `done`: let the event answer until it has.
    The first end in the stream is the one shown (libs/final.py), as SSE and the ledger do."""
    end = await final_event(bus, view.generation_id)
    if isinstance(end, GenerationDone):
        return view.model_copy(update={
            "status": end.status.value, "vars": end.vars or view.vars, "output_url": end.output_url,
            "output_key": end.output_key, "prompt": end.prompt or view.prompt,
            "provider": end.provider or view.provider})
    failed = end
    if isinstance(failed, GenerationFailed):
        return view.model_copy(update={"status": failed.status.value, "error": failed.message,
                                       "vars": failed.vars or view.vars})
    return view


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
