"""like_history: the customer's last liked/downloaded generations become style context.

A fresh run reads the window with its other start-of-run reads (`RunStartRead`), so the step
finds it read already; a resumed run reads it here.
"""

from __future__ import annotations

from libs.bus import Bus
from libs.schemas import GenerationJob, LikeList, LikeWindow
from services.pipeline.steps.base import StepContext
from services.pipeline.taste import style_history

WINDOW_WITH_VISION = 5
WINDOW_WITHOUT_VISION = 20


def window_for(vision_intelligence: bool) -> int:
    """Window 5 with vision intelligence (images and prompts), 20 without (images only)."""
    return WINDOW_WITH_VISION if vision_intelligence else WINDOW_WITHOUT_VISION


async def like_window(bus: Bus, job: GenerationJob) -> LikeList:
    window = window_for(job.command.request.vision_intelligence)
    return await bus.request(LikeWindow(pass_id=job.pass_id, limit=window), LikeList)


async def like_history(ctx: StepContext) -> None:
    vision = ctx.job.command.request.vision_intelligence
    window = window_for(vision)
    ctx.input.update(window=window, vision_intelligence=vision)
    likes = ctx.likes if ctx.likes is not None else await like_window(ctx.deps.bus, ctx.job)
    csv, tags = style_history(likes.items, with_prompts=vision)
    ctx.input["liked_generation_ids"] = [item.generation_id for item in likes.items]
    ctx.output.update(style_history_csv=csv, style_history_tags=tags, count=len(likes.items),
                      image_urls=[item.output_url for item in likes.items if item.output_url])
    ctx.vars["history"].update(vision_intelligence=vision, like_window=window, style_history_csv=csv,
                               style_history_tags=tags)
