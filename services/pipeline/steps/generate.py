"""Generate steps (seedream_generate*, kling_generate*): prompt + resolved settings -> output.

The prediction id is recorded (step STARTED + checkpoint) before the wait, and a
resumed step waits on that id instead of creating a second prediction. The output
is copied into the asset store under a deterministic key before the step ends:
MEGA never holds a provider's expiring URL.
"""

from __future__ import annotations

import mimetypes
from typing import Any

from libs.errors import ProviderError
from libs.schemas import Flow
from services.pipeline.adapters.protocols import CONTEXT_KEY, PredictionOutput, for_remote
from services.pipeline.adapters.retry import with_retries
from services.pipeline.config import deep_merge
from services.pipeline.steps.base import StepContext
from services.pipeline.steps.predict import OutputCodes, predict_once
from services.pipeline.taste import with_constraints

OUTPUT_VARS = {"seedream": "seedream_image", "kling": "kling_video"}
GENERATE_CODES = OutputCodes(no_output="PREDICTION_FAILED", no_output_message="the generator returned no output",
                             fetch_failed="PREDICTION_FAILED", default_type="application/octet-stream")
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "video/mp4": ".mp4"}


def resolve_settings(ctx: StepContext, provider: str) -> dict[str, Any]:
    """defaults < customer preferences < request overrides (deep merge), recorded with the preset id."""
    entry, defaults = ctx.config.provider_defaults(provider)
    ctx.settings_ref = {"key": entry.key, "version": entry.version, "id": entry.id}
    inputs = ctx.job.command.request.inputs
    request_layer: dict[str, object] = {}
    if provider == "kling" and inputs.duration_s:
        request_layer["duration"] = inputs.duration_s
    if inputs.aspect_ratio:
        request_layer["aspect_ratio"] = inputs.aspect_ratio
    resolved = deep_merge(
        defaults,
        ctx.prep.get("customer_settings", {}).get(provider) or {},
        request_layer,
        ctx.job.command.request.settings.get(provider) or {},
    )
    ctx.input.update(settings_key=entry.key, settings_version=entry.version, settings_id=entry.id,
                     settings_resolved=resolved)
    ctx.vars["settings"][provider] = resolved
    ctx.vars["meta"]["settings_versions"][provider] = entry.version
    return resolved


def references(ctx: StepContext, provider: str) -> tuple[list[str], dict[str, Any]]:
    """The images a generator works from (Seedream's `image_input`) and what the pipeline knows of
    them and of the customer's words (CONTEXT_KEY: read by the offline provider, never sent out)."""
    assets, inputs, feedback = ctx.vars["assets"], ctx.vars["inputs"], ctx.vars["feedback"]
    parent = ctx.prep.get("parent") or {}
    flow = ctx.job.command.flow
    if provider == "kling":
        previous = parent.get("motion_prompt") if flow is Flow.VIDEO_TWEAK else None
        return [], {"motion_brief": inputs["motion_user_brief"], "movement_style": inputs["movement_style"],
                    "feedback": feedback["motion_feedback"], "previous_motion": previous}
    if flow.is_tweak:
        still = parent.get("output_url")
        return ([still] if still else []), {"still": still, "feedback": feedback["still_feedback"]}
    inspirations = [u for u in assets["inspiration_image_ids"] if u]
    images = [u for u in (assets["product_image_id"], assets["logo_image_id"], *inspirations) if u]
    return images, {"product": assets["product_image_id"], "logo": assets["logo_image_id"],
                    "inspirations": inspirations, "brief": inputs["userBrief"], "style": inputs["style"]}


async def generate(ctx: StepContext) -> None:
    provider = str(ctx.arg["provider"])
    settings = ctx.deps.settings
    predictor = ctx.deps.providers.predictor
    resolved = resolve_settings(ctx, provider)
    if provider == "seedream":
        source_prompt = ctx.vars["prompts"]["clean_prompt"]
        model = settings.seedream_model
    else:
        prompts = ctx.vars["prompts"]
        source_prompt = prompts.get("motion_prompt") or prompts.get("motion_sugg_prompt") or ""
        model = settings.kling_model
    prompt = with_constraints(source_prompt, ctx.constraints)
    images, context = references(ctx, provider)
    provider_input: dict[str, Any] = {**resolved, "prompt": prompt}
    if provider == "kling":
        provider_input["start_image"] = ctx.vars["assets"]["input_still_image_id"]
    elif images:
        provider_input["image_input"] = images
    ctx.provider, ctx.model = provider, model
    ctx.input.update(prompt=prompt, model=model, backend=predictor.provider, provider_input=for_remote(provider_input),
                     provider_context=context)
    provider_input[CONTEXT_KEY] = context

    async def attempt() -> tuple[PredictionOutput, bytes, str]:
        return await predict_once(ctx, predictor, model, provider_input, GENERATE_CODES)

    label = provider.upper()
    try:
        (out, data, content_type), attempts = await with_retries(attempt, settings.provider_max_attempts,
                                                                     provider=provider)
    except ProviderError as exc:
        exc.instance_code = f"{label}_TIMEOUT" if "TIMEOUT" in exc.instance_code else f"{label}_FAILED"
        raise
    ext = EXTENSIONS.get(content_type) or mimetypes.guess_extension(content_type) or ".bin"
    key = f"mma/{ctx.job.generation_id}/{ctx.step_no}-{provider}{ext}"
    stored = ctx.store_output(data, key=key, content_type=content_type)
    ctx.kept.clear()
    ctx.kept[stored.url] = data  # the postscan reads it from here, not back from the store
    ctx.output.update(prediction_id=out.prediction_id, output_url=stored.url, output_key=stored.key,
                      content_type=content_type, bytes=stored.bytes, attempts=attempts)
    prefix = OUTPUT_VARS[provider]
    ctx.vars["outputs"].update({f"{prefix}_id": stored.key, f"{prefix}_url": stored.url})
