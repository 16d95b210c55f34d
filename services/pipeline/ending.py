"""What a run says when it ends: done, failed (an error) or cancelled (on request, or as stuck).

Failed and cancelled take the same path (`Run.end`): the running step, if any, is recorded
FAILED with its `error`, and one `failed` event carries the customer's message (run plane)
and the ops `detail` (ops plane). This module builds what differs between them, as an
`Ending`. Billing reads the generation's first end (libs/final.py) to refund.
"""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field

import structlog

from libs.errors import ConfigError, GptSchemaError, MmaError, ProviderError
from libs.final import STUCK_CODE, STUCK_MESSAGE, SWEEPER
from libs.schemas import GenerationDone, GenerationJob, MmaStatus
from libs.settings import Settings
from services.pipeline.adapters.protocols import Predictor
from services.pipeline.adapters.retry import count_provider_error
from services.pipeline.records import StepError, StepRun, error_payload
from services.pipeline.state import MmaVars, RunIds, RunState

log = structlog.get_logger("pipeline")

CATEGORIES = {
    "TIMEOUT": "⏱️",
    "PROVIDER_ERROR": "🛰️",
    "GPT_SCHEMA_ERROR": "🧠",
    "CONFIG_ERROR": "🎛️",
    "VALIDATION_ERROR": "⚠️",
    "UNCAUGHT_EXCEPTION": "💥",
    "CANCELLED": "🛑",
}
SAFE_MESSAGES = {
    "TIMEOUT": "The generator took too long to answer. Your credits were refunded.",
    "PROVIDER_ERROR": "The generator failed on this one. Your credits were refunded.",
    "GPT_SCHEMA_ERROR": "Mina could not understand the model's answer. Your credits were refunded.",
    "CONFIG_ERROR": "Mina is misconfigured right now. Your credits were refunded.",
    "VALIDATION_ERROR": "Something in the request could not be used. Your credits were refunded.",
    "UNCAUGHT_EXCEPTION": "Something went wrong on our side. Your credits were refunded.",
}
CODE_MESSAGES = {
    "DEADLINE_EXCEEDED": "This request's deadline passed before it could start. Your credits were refunded.",
}
CANCELLED_CODE = "CANCELLED"
CANCELLED_MESSAGE = "Cancelled. Your credits were refunded."
CANCELLED_KEPT_MESSAGE = "Cancelled. The generator had already started, so the credits were used."
CANCELLED_ON_REQUEST = "cancelled on request"


@dataclass(frozen=True)
class Ending:
    """One end: `failed`'s code, customer message and status, the running step's error, the ops detail,
    and the canonical log line written once the end is published."""

    code: str
    message: str
    status: MmaStatus  # ERROR, or CANCELLED
    step_error: StepError
    detail: dict[str, object]
    log_event: str
    log_level: int
    log_fields: dict[str, object] = field(default_factory=dict)


def done_event(job: GenerationJob, vars: MmaVars, settings: Settings) -> GenerationDone:
    """`done` with the flow's result: a still, a video, or (suggest only) the suggested motion prompt."""
    ids = RunIds(generation_id=job.generation_id, pass_id=job.pass_id)
    outputs, prompts = vars["outputs"], vars["prompts"]
    if job.command.flow.mode == "still":
        return GenerationDone(**ids, vars=vars, output_url=outputs.get("seedream_image_url"),
                              output_key=outputs.get("seedream_image_id"), prompt=prompts["clean_prompt"],
                              provider="seedream", model=settings.seedream_model, content_type="image")
    if "kling_video_url" in outputs:
        return GenerationDone(**ids, vars=vars, output_url=outputs["kling_video_url"],
                              output_key=outputs.get("kling_video_id"),
                              prompt=prompts["motion_prompt"] or prompts["motion_sugg_prompt"], provider="kling",
                              model=settings.kling_model, content_type="motion")
    # suggest only: the suggestion is the result, no video was made
    prompts["suggested_prompt"] = prompts["motion_sugg_prompt"] or prompts["motion_prompt"]
    return GenerationDone(**ids, status=MmaStatus.SUGGESTED, vars=vars, prompt=prompts["suggested_prompt"],
                          content_type="text")


def category_of(exc: BaseException, code: str) -> str:
    if code.endswith("TIMEOUT") or code == "DEADLINE_EXCEEDED":
        return "TIMEOUT"
    if isinstance(exc, GptSchemaError) or code == "GPT_SCHEMA_ERROR":
        return "GPT_SCHEMA_ERROR"
    if isinstance(exc, ConfigError):
        return "CONFIG_ERROR"
    if isinstance(exc, ProviderError):
        return "PROVIDER_ERROR"
    if isinstance(exc, MmaError) and 400 <= exc.http_status < 500:
        return "VALIDATION_ERROR"
    return "UNCAUGHT_EXCEPTION"


def _detail(job: GenerationJob, step: StepRun | None, *, emoji: str, level: str, category: str, code: str,
            message: str) -> dict[str, object]:
    """The ops-plane fields both ends share."""
    ctx = step.ctx if step is not None else None
    return {
        "emoji": emoji, "level": level, "category": category, "error_code": code, "message": message,
        "request_id": job.command.request_id, "pass_id": job.pass_id, "generation_id": job.generation_id,
        "step_type": ctx.step_type if ctx else None, "step_no": ctx.step_no if ctx else None,
        "provider": ctx.provider if ctx else None, "model": ctx.model if ctx else None,
    }


def failure(exc: BaseException, job: GenerationJob, step: StepRun | None) -> Ending:
    """An error ends the run `error`, refunded; an unexpected one keeps its stack in the ops detail."""
    error = error_payload(exc)
    code = error["error_code"]
    category = category_of(exc, code)
    ctx = step.ctx if step is not None else None
    if isinstance(exc, ProviderError):  # not already counted at the retry edge (e.g. a schema error)
        count_provider_error(ctx.provider if ctx and ctx.provider else "unknown", exc)
    detail = _detail(job, step, emoji=CATEGORIES[category], level="error", category=category, code=code,
                     message=error["message"])
    detail.update(ctx=ctx.ctx_ref if ctx else None, settings=ctx.settings_ref if ctx else None,
                  provider_http_status=error.get("provider_http_status"), retry=error.get("retry"))
    if category == "UNCAUGHT_EXCEPTION":
        detail["stack"] = "".join(traceback.format_exception(exc))[-4000:]
    return Ending(code=code, message=CODE_MESSAGES.get(code, SAFE_MESSAGES[category]), status=MmaStatus.ERROR,
                  step_error=error, detail=detail, log_event="pipeline.generation_failed", log_level=logging.WARNING,
                  log_fields={"error_code": code, "category": category, "step_type": detail["step_type"],
                              "step_no": detail["step_no"]})


async def cancel_prediction(state: RunState, predictor: Predictor, step: StepRun | None,
                            ids: RunIds) -> dict[str, object]:
    """Cancel the run's pending prediction at the provider; what the ops detail says about it ({} if none)."""
    if not state.pending or not state.pending.get("prediction_id"):
        return {}
    prediction_id = str(state.pending["prediction_id"])
    try:
        cancel = predictor.cancel(prediction_id)
        await (step.ctx.provider_call(cancel) if step is not None else cancel)
    except ProviderError as exc:
        log.warning("pipeline.prediction_cancel_failed", prediction_id=prediction_id, error=exc.message, **ids)
        return {"prediction_id": prediction_id, "prediction_cancelled": False}
    return {"prediction_id": prediction_id, "prediction_cancelled": True}


def cancellation(job: GenerationJob, state: RunState, step: StepRun | None, requested_by: str | None,
                 refund_after_provider_start: bool, prediction: dict[str, object]) -> Ending:
    """A cancel ends the run `cancelled`; a cancel by the stuck sweeper ends it STUCK_TIMEOUT instead.

    `detail.provider_started` tells billing whether the generator may already have charged
    us (billing's refund rule reads it, with the same setting as `refund_after_provider_start`);
    `cancelled_phase` is the status the run had when it stopped.
    """
    refunded = not state.provider_started or refund_after_provider_start
    if requested_by == SWEEPER:  # stopped as stuck: a failure of ours, always refunded
        code, message, status = STUCK_CODE, STUCK_MESSAGE, MmaStatus.ERROR
        detail = _detail(job, step, emoji=CATEGORIES["TIMEOUT"], level="error", category="TIMEOUT", code=STUCK_CODE,
                         message=STUCK_MESSAGE)
    else:
        code, status = CANCELLED_CODE, MmaStatus.CANCELLED
        message = CANCELLED_MESSAGE if refunded else CANCELLED_KEPT_MESSAGE
        detail = _detail(job, step, emoji=CATEGORIES["CANCELLED"], level="warn", category="CANCELLED",
                         code=CANCELLED_CODE, message=CANCELLED_ON_REQUEST)
    detail.update(cancelled_phase=state.status, provider_started=state.provider_started, requested_by=requested_by,
                  **prediction)
    if requested_by == SWEEPER:
        detail["run_cancelled"] = True
    return Ending(code=code, message=message, status=status,
                  step_error=StepError(error_code=CANCELLED_CODE, message=CANCELLED_ON_REQUEST), detail=detail,
                  log_event="pipeline.generation_cancelled", log_level=logging.INFO,
                  log_fields={"cancelled_phase": state.status, "provider_started": state.provider_started,
                              "prediction_cancelled": prediction.get("prediction_cancelled"),
                              "requested_by": requested_by})
