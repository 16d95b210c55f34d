"""Replicate through the official SDK: create a prediction, poll it, cancel it.

`create` returns as soon as Replicate knows the prediction, so the caller can record
its id (step STARTED + checkpoint) before waiting: a resumed run waits on the same
prediction instead of paying for a second one. SDK and HTTP errors become
ProviderError here; a poll that fails transiently is simply polled again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from replicate.client import Client as ReplicateClient
from replicate.exceptions import ReplicateError

from libs.errors import ProviderError
from services.pipeline.adapters.protocols import PredictionOutput, for_remote


def translate(exc: Exception) -> ProviderError:
    if isinstance(exc, ReplicateError):
        status = exc.status
        return ProviderError(
            f"the generator answered HTTP {status}", code="PREDICTION_FAILED", provider_http_status=status,
            is_retryable=status is None or status >= 500 or status == 429,
        )
    if isinstance(exc, httpx.TimeoutException):
        return ProviderError("the generator did not answer in time", code="PREDICTION_TIMEOUT", is_retryable=True)
    if isinstance(exc, ValueError):
        return ProviderError("the generator sent a malformed response", code="PREDICTION_FAILED", is_retryable=True)
    if isinstance(exc, httpx.TransportError):
        return ProviderError("the generator could not be reached", code="PREDICTION_FAILED", is_retryable=True)
    return ProviderError(f"the generator failed ({type(exc).__name__})", code="PREDICTION_FAILED")


def output_url(output: object) -> str | None:
    """The first URL of a prediction output (a string, a list of strings, or a dict of them)."""
    if isinstance(output, str):
        return output
    if isinstance(output, list | tuple):
        for item in output:
            found = output_url(item)
            if found:
                return found
    if isinstance(output, dict):
        for value in output.values():
            found = output_url(value)
            if found:
                return found
    return None


class ReplicatePredictor:
    provider = "replicate"

    def __init__(self, *, api_token: str, base_url: str | None, timeout_s: float, poll_interval_s: float) -> None:
        self.timeout_s = timeout_s
        self.poll_interval_s = poll_interval_s
        self.client = ReplicateClient(
            api_token=api_token, base_url=base_url,
            timeout=httpx.Timeout(timeout_s, connect=min(10.0, timeout_s)),
        )

    async def create(self, *, model: str, input: dict[str, Any]) -> str:
        input = for_remote(input)
        try:
            if ":" in model:
                prediction = await self.client.predictions.async_create(version=model.split(":", 1)[1], input=input)
            else:
                prediction = await self.client.predictions.async_create(model=model, input=input)
        except (ReplicateError, httpx.HTTPError, ValueError) as exc:
            raise translate(exc) from exc
        return str(prediction.id)

    async def wait(
        self, prediction_id: str, *, model: str, input: dict[str, Any], timeout_s: float
    ) -> PredictionOutput:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    prediction = await self.client.predictions.async_get(prediction_id)
            except (ReplicateError, httpx.HTTPError, ValueError, TimeoutError) as exc:
                error = translate(exc) if not isinstance(exc, TimeoutError) else ProviderError(
                    "the generator did not answer in time", code="PREDICTION_TIMEOUT", is_retryable=True)
                if not error.is_retryable:
                    raise error from exc
            else:
                if prediction.status == "succeeded":
                    url = output_url(prediction.output)
                    if not url:
                        raise ProviderError("the generator returned no output", code="PREDICTION_FAILED")
                    return PredictionOutput(prediction_id=prediction_id, url=url)
                if prediction.status in ("failed", "canceled"):  # the model's own words, for a retry rule
                    raise ProviderError(f"the generation {prediction.status}", code="PREDICTION_FAILED",
                                        prediction_status=prediction.status,
                                        provider_error=str(prediction.error or "")[:1000],
                                        logs_tail=str(prediction.logs or "")[-2000:])
            if time.monotonic() >= deadline:
                raise ProviderError("the generator did not finish in time", code="PREDICTION_TIMEOUT",
                                    is_retryable=True)
            await asyncio.sleep(min(self.poll_interval_s, max(0.0, deadline - time.monotonic())))

    async def cancel(self, prediction_id: str) -> None:
        try:
            await self.client.predictions.async_cancel(prediction_id)
        except (ReplicateError, httpx.HTTPError) as exc:
            raise translate(exc) from exc
