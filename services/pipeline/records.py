"""A step's record as the run publishes it (MMA.md): input, output, timing and error.

The step fills `input` and `output` itself; the run adds the timing when the step
returns or fails, and the `error` of a failed step, so a success, a failure and a
cancel record the same shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import NotRequired, TypedDict

from libs.errors import MmaError, ProviderError
from libs.schemas import StepPhase, StepRecorded, utcnow
from services.pipeline.state import RunIds
from services.pipeline.steps.base import StepContext


class Timing(TypedDict):
    """`ended_at` and `duration_ms` are None while the step runs; `provider_ms` is the part of it spent
    inside provider calls."""

    started_at: str
    ended_at: str | None
    duration_ms: int | None
    provider_ms: NotRequired[float]


class Retry(TypedDict):
    attempt: int
    max: int


class StepError(TypedDict):
    """A failed step's `error`: code, message, the provider's HTTP status and the tries it took."""

    error_code: str
    message: str
    provider_http_status: NotRequired[int]
    retry: NotRequired[Retry]


def error_payload(exc: BaseException) -> StepError:
    code = exc.instance_code if isinstance(exc, MmaError) else "UNCAUGHT_EXCEPTION"
    message = exc.message if isinstance(exc, MmaError) else type(exc).__name__
    error = StepError(error_code=code, message=message)
    if isinstance(exc, ProviderError) and exc.provider_http_status is not None:
        error["provider_http_status"] = exc.provider_http_status
    if isinstance(exc, MmaError) and isinstance(retry := exc.details.get("retry"), dict):
        attempt, most = retry.get("attempt"), retry.get("max")
        if isinstance(attempt, int) and isinstance(most, int):
            error["retry"] = Retry(attempt=attempt, max=most)
    return error


@dataclass
class StepRun:
    """One step from its start until it returns, fails or is cancelled; `stop` fixes its end once."""

    ctx: StepContext
    started_at: datetime = field(default_factory=utcnow)
    started: float = field(default_factory=time.perf_counter)
    ended: float | None = None

    def stop(self) -> float:
        """The step's duration in seconds, measured the first time this is asked."""
        if self.ended is None:
            self.ended = time.perf_counter()
        return self.ended - self.started

    def timing(self) -> Timing:
        return Timing(started_at=self.started_at.isoformat(), ended_at=utcnow().isoformat(),
                      duration_ms=int(self.stop() * 1000), provider_ms=round(self.ctx.provider_s * 1000, 2))

    def record(self, ids: RunIds, phase: StepPhase, error: StepError | None = None) -> StepRecorded:
        """The step's SUCCEEDED or FAILED record."""
        ctx, timing = self.ctx, self.timing()
        return StepRecorded(**ids, step_no=ctx.step_no, step_type=ctx.step_type, phase=phase, provider=ctx.provider,
                            model=ctx.model, latency_ms=timing["duration_ms"],
                            payload={"input": ctx.input, "output": ctx.output, "timing": timing, "error": error})


def started_record(ctx: StepContext, ids: RunIds, prediction_id: str) -> StepRecorded:
    """The STARTED record of a step whose provider call is under way, with the prediction id to wait on."""
    timing = Timing(started_at=utcnow().isoformat(), ended_at=None, duration_ms=None)
    return StepRecorded(**ids, step_no=ctx.step_no, step_type=ctx.step_type, phase=StepPhase.STARTED,
                        provider=ctx.provider, model=ctx.model,
                        payload={"input": dict(ctx.input), "output": {"prediction_id": prediction_id},
                                 "timing": timing, "error": None})
