"""The fingertips flow: one edit of an image by one of the six tools (UPSTREAM.md section 1).

Plan: an optional prompt helper (`fingertips_prompt`: the fill rewrite, the expand scene, the
upscale caption), then `fingertips_generate` (the tool itself). What the tool is sent is shaped
here, as the original backend shaped it: the eraser's image and mask under every name the model
reads, expand's ratio as a 4K canvas, the upscaler's caption and stock negative prompt.
"""

from __future__ import annotations

import json
import re
from typing import Any

from libs.bus import Bus
from libs.errors import InvalidInputError
from libs.fingertips import CANVAS_SIZES, Tool, check_inputs, tool_for
from libs.schemas import MMA_VARS_VERSION, GenerationDone, GenerationJob
from libs.settings import Settings
from services.pipeline.config import load_active
from services.pipeline.state import MmaVars, PlanEntry, Prep, RunIds

STOCK_NEGATIVE = "blurry, distorted, deformed, low quality, artifacts, watermark, text, seams, mismatched lighting"
EXPAND_FALLBACK = ("Continue the scene naturally beyond its borders with the same surfaces, lighting, colours and "
                   "perspective; seamless, photorealistic")
UPSCALE_FALLBACK = "high quality, detailed"
OOM_MARKERS = re.compile(r"cuda out of memory|outofmemoryerror|\boom\b", re.IGNORECASE)


def tool_of(settings: Settings, job: GenerationJob) -> Tool:
    edit = job.command.request.fingertips
    tool = tool_for(settings, edit.model_key if edit else None)
    if tool is None:
        raise InvalidInputError("UNKNOWN_FINGERTIPS_MODEL", code="UNKNOWN_FINGERTIPS_MODEL")
    return tool


def helper_of(tool: Tool, inputs: dict[str, Any]) -> str | None:
    """Which prompt helper the tool runs first, if any (a prompt the customer wrote is kept as it is)."""
    if tool.key == "flux_fill":
        return "fill"
    if tool.key == "expand" and not inputs.get("prompt"):
        return "expand"
    if tool.key == "upscale" and tool.variant == "magic" and not inputs.get("prompt"):
        return "upscale"
    return None


def initial_vars(job: GenerationJob, tool: Tool, inputs: dict[str, Any]) -> MmaVars:
    return {
        "version": MMA_VARS_VERSION,
        "mode": "fingertips",
        "flow": job.command.flow.value,
        "fingertips": {"modelKey": tool.key, "label": tool.label, "replicateModel": tool.replicate_model,
                       "variant": tool.variant, "inputs": inputs, "cost": tool.cost,
                       "usd_estimate": tool.usd_estimate},
        "prompts": {"prompt": inputs.get("prompt"), "negative_prompt": inputs.get("negative_prompt")},
        "userMessages": {"scan_lines": [], "final_line": None},
        "settings": {},
        "outputs": {},
        "meta": {"ctx_versions": {}, "settings_versions": {}, "hard_blocks": []},
    }


async def prepare(job: GenerationJob, bus: Bus) -> tuple[Prep, MmaVars]:
    """(prep, vars) of an edit: the inputs re-checked against the tool's schema, the plan, the config snapshot."""
    settings = bus.settings
    tool = tool_of(settings, job)
    edit = job.command.request.fingertips
    checked = check_inputs(tool, edit.inputs if edit else {})
    if checked.missing:
        raise InvalidInputError(f"Missing required inputs for {tool.label}: {', '.join(checked.missing)}",
                                code="MISSING_REQUIRED_INPUTS")
    config = await load_active(bus)
    helper = helper_of(tool, checked.inputs)
    plan: list[PlanEntry] = [("fingertips_prompt", {"purpose": helper})] if helper else []
    plan.append(("fingertips_generate", {"model_key": tool.key}))
    prep = Prep(config=config.to_json(), plan=plan, hard_blocks=[], constraints=[], customer_settings={}, parent={})
    return prep, initial_vars(job, tool, checked.inputs)


def parse_helper_answer(purpose: str, text: str | None, inputs: dict[str, Any]) -> tuple[str, str | None, bool]:
    """(prompt, negative prompt, fell back) from a helper's answer, with the documented fallbacks:

    fill: no answer keeps the customer's prompt; prose becomes the prompt with the stock negative.
    expand: anything but a JSON prompt is the generic continuation. upscale: empty is "high quality"."""
    if purpose == "upscale":
        caption = (text or "").strip()
        return (caption, None, False) if caption else (UPSCALE_FALLBACK, None, True)
    answer: Any = None
    if text:
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
    prompt = answer.get("prompt") if isinstance(answer, dict) else None
    negative = answer.get("negative_prompt") if isinstance(answer, dict) else None
    if isinstance(prompt, str) and prompt.strip():
        kept = negative.strip() if isinstance(negative, str) and negative.strip() else STOCK_NEGATIVE
        return prompt.strip(), kept, False
    if purpose == "expand":
        return EXPAND_FALLBACK, STOCK_NEGATIVE, True
    if text and text.strip():  # fill: prose is taken as the prompt
        return text.strip(), STOCK_NEGATIVE, True
    return str(inputs.get("prompt") or ""), inputs.get("negative_prompt"), True


def provider_input(tool: Tool, inputs: dict[str, Any], prompts: dict[str, Any]) -> dict[str, Any]:
    """What the tool's model is sent, shaped per tool."""
    sent = {k: v for k, v in inputs.items() if v is not None}
    prompt, negative = prompts.get("prompt"), prompts.get("negative_prompt")
    if tool.key == "eraser":
        image, mask = sent.get("image"), sent.pop("mask_image", None)
        sent.update(image=image, image_url=image, image_file=image, mask_url=mask, mask_file=mask)
    elif tool.key in ("flux_fill", "expand"):
        if prompt:
            sent["prompt"] = prompt
        if negative:
            sent["negative_prompt"] = negative
        if tool.key == "expand" and str(sent.get("aspect_ratio") or "") in CANVAS_SIZES:
            width, height = CANVAS_SIZES[str(sent.pop("aspect_ratio"))]
            sent["canvas_size"] = [width, height]
    elif tool.key == "upscale" and tool.variant == "magic":
        sent["prompt"] = prompt or UPSCALE_FALLBACK
        sent["negative_prompt"] = negative or tool.default_negative
    return sent


def is_out_of_memory(text: str) -> bool:
    return OOM_MARKERS.search(text) is not None


def low_memory_input(sent: dict[str, Any]) -> dict[str, Any]:
    """The magic upscaler's one retry after a CUDA out-of-memory failure: smaller and lighter."""
    return {**sent, "resolution": "2048", "steps": min(int(sent.get("steps") or 20), 16),
            "creativity": min(float(sent.get("creativity") or 0.25), 0.2),
            "guidance_scale": min(float(sent.get("guidance_scale") or 7), 6.0)}


def fingertips_done(ids: RunIds, vars: MmaVars) -> GenerationDone:
    """The end of an edit: the stored output, the model it came from, the prompt it was sent."""
    outputs, edit = vars["outputs"], vars["fingertips"]
    return GenerationDone(**ids, vars=vars, output_url=outputs.get("fingertips_image_url"),
                          output_key=outputs.get("fingertips_image_id"), prompt=vars["prompts"].get("prompt"),
                          provider=edit.get("provider"), model=edit.get("replicateModel"), content_type="image")
