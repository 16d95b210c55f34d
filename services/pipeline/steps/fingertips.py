"""Fingertips steps: `fingertips_prompt` (a prompt helper, with fallbacks) and `fingertips_generate` (the tool).

The tool's prediction id is recorded (step STARTED + checkpoint) before the wait, so a resumed
run waits on it instead of paying for a second edit. The output is copied into the asset store
as `mma/<generation id>/<step no>-<modelKey><ext>` before the step ends (MEGA never holds a
provider's expiring URL), beside every other generation's output: the live frontend shows an image
in its viewer only when its URL has `/mma/` or `/generations/` in it (StudioRight `safeStillUrl`),
and otherwise keeps showing the still the edit was made from.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from libs.errors import InvalidInputError, ProviderError
from libs.fingertips import Tool
from services.pipeline.adapters.protocols import EditPurpose, PredictionOutput, Predictor
from services.pipeline.adapters.retry import with_retries
from services.pipeline.fingertips import (
    is_out_of_memory,
    low_memory_input,
    parse_helper_answer,
    provider_input,
    tool_of,
)
from services.pipeline.steps.base import StepContext
from services.pipeline.steps.predict import OutputCodes, predict_once

EDIT_CODES = OutputCodes(no_output="NO_OUTPUT_URL", no_output_message="the tool returned no output",
                         fetch_failed="R2_FETCH_FAILED", default_type="image/png")
EXTENSIONS = {".png": ".png", ".jpg": ".jpg", ".jpeg": ".jpg", ".webp": ".webp", ".gif": ".gif", ".svg": ".svg"}
TYPE_EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif",
                   "image/svg+xml": ".svg"}
# an SVG is served from our own origin: one that could run script there is never stored
UNSAFE_SVG = re.compile(rb"<script|<foreignobject|javascript:|\son[a-z]+\s*=", re.IGNORECASE)
LINES = {
    "eraser": "Erasing what you circled and rebuilding what was behind it.",
    "flux_fill": "Painting your idea into the selection.",
    "expand": "Widening the frame and carrying the scene on.",
    "remove_bg": "Lifting your subject off its background.",
    "upscale": "Sharpening every detail.",
    "vectorize": "Tracing your image into clean vector shapes.",
}


@dataclass(frozen=True)
class Helper:
    ctx: str
    model: str
    temperature: float | None
    max_tokens: int
    detail: str | None
    question: str


HELPERS: dict[str, Helper] = {
    "fill": Helper("fingertips_fill", "gpt-4o-mini", 0.3, 300, None, ""),
    "expand": Helper("fingertips_expand", "gpt-4o-mini", 0.3, 300, "high",
                     "How does this scene continue beyond its borders? Answer JSON with prompt and negative_prompt."),
    "upscale": Helper("fingertips_upscale", "gpt-4o", None, 150, None, "Describe this image for a refiner."),
}


def _purpose(value: Any) -> EditPurpose:
    if value == "fill":
        return "fill"
    if value == "expand":
        return "expand"
    return "upscale"


async def fingertips_prompt(ctx: StepContext) -> None:
    """Ask the tool's prompt helper; a failed or unusable answer falls back as the original backend did."""
    purpose = _purpose(ctx.arg.get("purpose"))
    helper = HELPERS[purpose]
    system = ctx.use_ctx(helper.ctx)
    writer = ctx.deps.providers.edit_writer
    inputs: dict[str, Any] = ctx.vars["fingertips"]["inputs"]
    ctx.provider, ctx.model = writer.provider, helper.model
    user = str(inputs.get("prompt") or "") if purpose == "fill" else helper.question
    ctx.input.update(purpose=purpose, model=helper.model, user=user, temperature=helper.temperature,
                     max_tokens=helper.max_tokens)
    text: str | None = None
    try:
        image = None if purpose == "fill" else await ctx.deps.store.get_bytes(str(inputs["image"]))
        if image is not None:
            ctx.input["image_url"] = inputs["image"]
        text, attempts = await ctx.provider_call(writer.ask(
            purpose=purpose, model=helper.model, system=system, user=user, image=image,
            temperature=helper.temperature, max_tokens=helper.max_tokens, detail=helper.detail))
        ctx.output["attempts"] = attempts
    except (ProviderError, InvalidInputError) as exc:  # the edit goes on with the fallback
        ctx.output["error"] = {"error_code": exc.instance_code, "message": exc.message}
    prompt, negative, fell_back = parse_helper_answer(purpose, text, inputs)
    ctx.output.update(answer=text, prompt=prompt, negative_prompt=negative, fallback=fell_back)
    ctx.vars["prompts"].update(prompt=prompt, negative_prompt=negative)


def extension_of(out: PredictionOutput, content_type: str) -> str:
    """From the provider URL's name when it has a known one, else from the content type, else .png."""
    if out.url:
        suffix = "." + urlparse(out.url).path.rsplit(".", 1)[-1].lower() if "." in urlparse(out.url).path else ""
        if suffix in EXTENSIONS:
            return EXTENSIONS[suffix]
    return TYPE_EXTENSIONS.get(content_type, ".png")


async def _predict(ctx: StepContext, editor: Predictor, tool: Tool, sent: dict[str, Any]) -> tuple[
        PredictionOutput, bytes, str, int]:
    settings = ctx.deps.settings

    async def attempt() -> tuple[PredictionOutput, bytes, str]:
        return await predict_once(ctx, editor, tool.replicate_model, sent, EDIT_CODES)

    (out, data, content_type), attempts = await with_retries(attempt, settings.provider_max_attempts,
                                                             provider=editor.provider)
    return out, data, content_type, attempts


def _failure_code(exc: ProviderError, provider: str) -> str:
    label = "REPLICATE" if provider == "replicate" else "EDIT"
    if exc.instance_code in ("NO_OUTPUT_URL", "R2_FETCH_FAILED", "R2_STORE_FAILED"):
        return exc.instance_code
    if "TIMEOUT" in exc.instance_code:
        return f"{label}_TIMEOUT"
    if exc.details.get("prediction_status") == "canceled":
        return f"{label}_CANCELED"
    return f"{label}_FAILED"


async def fingertips_generate(ctx: StepContext) -> None:
    settings = ctx.deps.settings
    tool = tool_of(settings, ctx.job)
    editor = ctx.deps.providers.editor
    edit = ctx.vars["fingertips"]
    sent = provider_input(tool, edit["inputs"], ctx.vars["prompts"])
    ctx.provider, ctx.model = editor.provider, tool.replicate_model
    ctx.input.update(model=tool.replicate_model, model_key=tool.key, backend=editor.provider, provider_input=sent,
                     prompt=sent.get("prompt"))
    ctx.lines.append(LINES[tool.key])
    started = time.perf_counter()
    try:
        try:
            out, data, content_type, attempts = await _predict(ctx, editor, tool, sent)
        except ProviderError as exc:
            said = " ".join([exc.message, str(exc.details.get("provider_error") or ""),
                             str(exc.details.get("logs_tail") or "")])
            if tool.variant != "magic" or not is_out_of_memory(said):
                raise
            sent = low_memory_input(sent)  # once, smaller: the refiner ran out of GPU memory
            ctx.output["low_memory_retry"] = True
            ctx.input["provider_input_retry"] = sent
            out, data, content_type, attempts = await _predict(ctx, editor, tool, sent)
    except ProviderError as exc:
        exc.instance_code = _failure_code(exc, editor.provider)
        raise
    key = f"mma/{ctx.job.generation_id}/{ctx.step_no}-{tool.key}{extension_of(out, content_type)}"
    if key.endswith(".svg") and UNSAFE_SVG.search(data):
        raise ProviderError("the tool returned an SVG with script in it", code="EDIT_FAILED")
    try:
        stored = await ctx.deps.store.put_bytes(data, folder="mma", content_type=content_type, key=key)
    except (OSError, InvalidInputError) as exc:
        raise ProviderError("the output could not be stored", code="R2_STORE_FAILED") from exc
    elapsed_ms = int((time.perf_counter() - started) * 1000)
    ctx.output.update(prediction_id=out.prediction_id, output_url=stored.url, output_key=stored.key,
                      content_type=content_type, bytes=stored.bytes, attempts=attempts)
    ctx.vars["outputs"].update(fingertips_image_id=stored.key, fingertips_image_url=stored.url)
    edit.update(prediction_id=out.prediction_id, provider=editor.provider, provider_input=sent,
                elapsed_ms=elapsed_ms, content_type=content_type)
