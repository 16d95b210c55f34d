"""Scan steps: read an image (an upload or an output) and caption it, with a friendly line."""

from __future__ import annotations

import asyncio

from libs.errors import InvalidInputError
from services.pipeline.adapters.offline import first_frame
from services.pipeline.steps.base import StepContext

_SCAN_TARGETS = {
    "scan_product": ("product", "product_crt"),
    "scan_logo": ("logo", "logo_crt"),
    "scan_inspiration": ("inspiration", "inspiration_crt"),
    "scan_input_still": ("still", "still_crt"),
}


async def _scan(ctx: StepContext, url: str, purpose: str, image: bytes | None = None) -> str:
    system = ctx.use_ctx("gpt_scanner")
    scanner = ctx.deps.providers.scanner
    ctx.provider, ctx.model = scanner.provider, scanner.model
    ctx.input.update(image_url=url, purpose=purpose)
    data = image if image is not None else ctx.kept.pop(url, b"") or await ctx.deps.store.get_bytes(url)
    call = scanner.scan(data, system=system, purpose=purpose)
    del data, image  # the scan holds the bytes only as long as it needs them (not through its latency)
    result = await ctx.provider_call(call)
    ctx.output.update(crt=result.crt, tags=result.tags, userMessage_line=result.user_line,
                      attempts=result.attempts)
    if result.details:
        ctx.output["image"] = result.details
    ctx.lines.append(result.user_line)
    return result.crt


async def scan_input(ctx: StepContext) -> None:
    """scan_product / scan_logo / scan_inspiration (one image each) / scan_input_still."""
    purpose, var = _SCAN_TARGETS[ctx.step_type]
    url = str(ctx.arg.get("url") or "")
    if not url:
        raise InvalidInputError(f"{ctx.step_type} has no image", code="MISSING_ASSET")
    if purpose == "inspiration":
        ctx.input["index"] = ctx.arg.get("index", 0)
    crt = await _scan(ctx, url, purpose)
    scans = ctx.vars["scans"]
    if var == "inspiration_crt":
        scans["inspiration_crt"].append(crt)
    else:
        scans[var] = crt


async def postscan_still(ctx: StepContext) -> None:
    url = ctx.vars["outputs"]["seedream_image_url"]
    ctx.vars["scans"]["output_still_crt"] = await _scan(ctx, url, "output_still")


async def postscan_video(ctx: StepContext) -> None:
    """A video is scanned through one of its frames (the offline and vision models read images)."""
    url = ctx.vars["outputs"]["kling_video_url"]
    reading = asyncio.to_thread(first_frame, ctx.kept.pop(url, b"") or await ctx.deps.store.get_bytes(url))
    ctx.input["frame"] = "first"
    ctx.vars["scans"]["output_video_crt"] = await _scan(ctx, url, "output_video", image=await reading)
