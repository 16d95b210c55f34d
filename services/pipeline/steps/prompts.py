"""GPT steps: turn scans, briefs, taste and feedback into provider prompts.

The text fed to the model always ends with the customer's hard-block constraints,
and the prompt kept from the answer gets them appended again in code, so a model
that ignores them cannot drop them.
"""

from __future__ import annotations

from services.pipeline.answers import (
    Answer,
    FeedbackMotionAnswer,
    FeedbackStillAnswer,
    MotionAnswer,
    MotionSuggestionAnswer,
    ReaderAnswer,
)
from services.pipeline.steps.base import StepContext
from services.pipeline.taste import constraints_line, with_constraints


def render_input(fields: list[tuple[str, object]], constraints: list[str]) -> str:
    """`Label: value` lines (empty values dropped) plus the constraints line."""
    lines = []
    for label, value in fields:
        if isinstance(value, list):
            value = " | ".join(str(v) for v in value if v)
        if value not in (None, ""):
            lines.append(f"{label}: {value}")
    if constraints:
        lines.append(constraints_line(constraints))
    return "\n".join(lines)


async def _ask(ctx: StepContext, ctx_name: str, text: str, schema: type[Answer],
               image_urls: list[str] | None = None) -> Answer:
    system = ctx.use_ctx(ctx_name)
    completer = ctx.deps.providers.completer
    ctx.provider, ctx.model = completer.provider, completer.model
    ctx.input["constraints"] = ctx.constraints
    if image_urls:
        ctx.input["image_urls"] = image_urls
    completion = await ctx.provider_call(completer.complete(system=system, user=text, schema=schema,
                                                             image_urls=image_urls))
    ctx.output["attempts"] = completion.attempts
    if completion.input_tokens is not None:
        ctx.output["usage"] = {"input_tokens": completion.input_tokens, "output_tokens": completion.output_tokens}
    answer = completion.answer
    assert isinstance(answer, schema)
    return answer


def _http_urls(*urls: str | None) -> list[str]:
    return [u for u in urls if u and u.startswith(("http://", "https://"))]


async def gpt_reader(ctx: StepContext) -> None:
    scans, inputs, history = ctx.vars["scans"], ctx.vars["inputs"], ctx.vars["history"]
    parts = {
        "product_crt": scans["product_crt"], "logo_crt": scans["logo_crt"],
        "inspiration_crt": list(scans["inspiration_crt"]), "style": inputs["style"],
        "userBrief": inputs["userBrief"], "style_history_csv": history["style_history_csv"],
    }
    text = render_input([
        ("User brief", parts["userBrief"]), ("Style", parts["style"]), ("Product", parts["product_crt"]),
        ("Logo", parts["logo_crt"]), ("Inspiration", parts["inspiration_crt"]),
        ("Style history", parts["style_history_csv"]),
    ], ctx.constraints)
    ctx.input.update(input_gpt_reader=text, parts=parts)
    answer = await _ask(ctx, "gpt_reader", text, ReaderAnswer)
    assert isinstance(answer, ReaderAnswer)
    prompt = with_constraints(answer.clean_prompt, ctx.constraints)
    ctx.output.update(clean_prompt=prompt, userMessage_final=answer.userMessage_final)
    ctx.vars["prompts"]["clean_prompt"] = prompt
    ctx.vars["userMessages"]["final_line"] = answer.userMessage_final
    ctx.lines.append(answer.userMessage_final)


async def gpt_feedback_still(ctx: StepContext) -> None:
    parent = ctx.prep["parent"]
    feedback = ctx.vars["feedback"]["still_feedback"]
    previous_prompt = parent.get("prompt") or ""
    previous_caption = parent.get("caption") or ""
    previous_image = parent.get("output_url")
    text = render_input([("Feedback", feedback), ("Previous prompt", previous_prompt),
                         ("Previous caption", previous_caption)], ctx.constraints)
    ctx.input.update(input_gpt_feedback=text, feedback=feedback, previous_prompt=previous_prompt,
                     previous_caption=previous_caption, previous_image_url=previous_image)
    answer = await _ask(ctx, "gpt_feedback_still", text, FeedbackStillAnswer, _http_urls(previous_image))
    assert isinstance(answer, FeedbackStillAnswer)
    prompt = with_constraints(answer.prompt, ctx.constraints)
    ctx.output.update(prompt=prompt, userMessage_final=answer.userMessage_final)
    ctx.vars["prompts"]["clean_prompt"] = prompt
    ctx.vars["userMessages"]["final_line"] = answer.userMessage_final
    ctx.lines.append(answer.userMessage_final)


def _motion_fields(ctx: StepContext) -> list[tuple[str, object]]:
    inputs = ctx.vars["inputs"]
    return [("Motion brief", inputs["motion_user_brief"]), ("Movement style", inputs["movement_style"]),
            ("Still caption", ctx.vars["scans"]["still_crt"])]


async def _motion_from_still(ctx: StepContext, ctx_name: str, schema: type[Answer], key: str) -> None:
    """Brief + movement style + still caption (and the still itself) -> a motion prompt at `key`."""
    text = render_input(_motion_fields(ctx), ctx.constraints)
    still = ctx.vars["assets"]["input_still_image_id"]
    ctx.input.update({f"input_{ctx_name}": text, "still_image_url": still})
    answer = await _ask(ctx, ctx_name, text, schema, _http_urls(still))
    prompt = with_constraints(str(getattr(answer, key)), ctx.constraints)
    ctx.output[key] = prompt
    ctx.vars["prompts"][key] = prompt


async def motion_suggestion(ctx: StepContext) -> None:
    await _motion_from_still(ctx, "motion_suggestion", MotionSuggestionAnswer, "motion_sugg_prompt")


async def gpt_reader_motion(ctx: StepContext) -> None:
    await _motion_from_still(ctx, "gpt_reader_motion", MotionAnswer, "motion_prompt")


async def gpt_feedback_motion(ctx: StepContext) -> None:
    parent = ctx.prep["parent"]
    feedback = ctx.vars["feedback"]["motion_feedback"]
    previous = parent.get("motion_prompt") or parent.get("prompt") or ""
    text = render_input([("Feedback", feedback), ("Previous motion prompt", previous)], ctx.constraints)
    ctx.input.update(input_gpt_feedback_motion=text, feedback=feedback, previous_motion_prompt=previous)
    answer = await _ask(ctx, "gpt_feedback_motion", text, FeedbackMotionAnswer)
    assert isinstance(answer, FeedbackMotionAnswer)
    prompt = with_constraints(answer.motion_prompt, ctx.constraints)
    ctx.output["motion_prompt"] = prompt
    ctx.vars["prompts"]["motion_prompt"] = prompt
