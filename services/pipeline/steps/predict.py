"""One provider prediction, shared by the generate and fingertips steps.

Resume-or-create (a recorded prediction id is waited on, never created twice), wait,
cancel the prediction on a retryable failure, then the output's bytes through the
server-side fetch guard. Retries and error codes stay with the caller.
"""

from __future__ import annotations

import mimetypes
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from libs.errors import InvalidInputError, ProviderError, ServiceUnavailableError
from libs.fetch import FetchPolicy, fetch
from services.pipeline.adapters.protocols import PredictionOutput, Predictor
from services.pipeline.steps.base import StepContext


@dataclass(frozen=True)
class OutputCodes:
    """What a caller calls a missing output and a failed download, and the type of bytes with none."""

    no_output: str
    no_output_message: str
    fetch_failed: str
    default_type: str


async def download(url: str, policy: FetchPolicy, failed_code: str) -> tuple[bytes, str]:
    """The provider's output, through the same guard as every server-side fetch."""
    try:
        data, content_type = await fetch(url, policy)
    except ServiceUnavailableError as exc:
        raise ProviderError("the output could not be downloaded", code=failed_code, is_retryable=True) from exc
    except InvalidInputError as exc:
        raise ProviderError(f"the output could not be downloaded ({exc.instance_code})", code=failed_code) from exc
    if content_type in ("application/octet-stream", "binary/octet-stream", ""):
        content_type = mimetypes.guess_type(urlparse(url).path)[0] or content_type
    return data, content_type


async def predict_once(ctx: StepContext, predictor: Predictor, model: str, provider_input: dict[str, Any],
                       codes: OutputCodes) -> tuple[PredictionOutput, bytes, str]:
    """One attempt: the recorded prediction of this step if there is one, else a new one; its output's bytes."""
    settings = ctx.deps.settings
    pending = ctx.state.pending
    if pending and pending.get("step_no") == ctx.step_no:
        prediction_id = str(pending["prediction_id"])
        ctx.output["resumed_prediction"] = True
    else:
        prediction_id = await ctx.provider_call(predictor.create(model=model, input=provider_input))
        await ctx.on_started(ctx, prediction_id)
    ctx.output["prediction_id"] = prediction_id
    try:
        out = await ctx.provider_call(predictor.wait(prediction_id, model=model, input=provider_input,
                                                     timeout_s=settings.provider_timeout_s))
    except ProviderError as exc:
        ctx.state.pending = None  # a next attempt (a retry, a low-memory rerun) starts a fresh prediction
        if exc.is_retryable:
            try:
                await ctx.provider_call(predictor.cancel(prediction_id))
            except ProviderError:
                ctx.output["cancel_failed"] = prediction_id
        raise
    if out.data is not None:
        return out, out.data, out.content_type or codes.default_type
    if not out.url:
        raise ProviderError(codes.no_output_message, code=codes.no_output)
    data, content_type = await ctx.provider_call(download(out.url, FetchPolicy.from_settings(settings),
                                                          codes.fetch_failed))
    return out, data, content_type
