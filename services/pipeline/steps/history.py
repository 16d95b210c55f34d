"""like_history: the customer's last liked/downloaded generations become style context."""

from __future__ import annotations

from libs.schemas import LikeList, LikeWindow
from services.pipeline.steps.base import StepContext
from services.pipeline.taste import style_history

WINDOW_WITH_VISION = 5
WINDOW_WITHOUT_VISION = 20


async def like_history(ctx: StepContext) -> None:
    """Window 5 with vision intelligence (images and prompts), 20 without (images only)."""
    vision = ctx.job.command.request.vision_intelligence
    window = WINDOW_WITH_VISION if vision else WINDOW_WITHOUT_VISION
    ctx.input.update(window=window, vision_intelligence=vision)
    likes = await ctx.deps.bus.request(LikeWindow(pass_id=ctx.job.pass_id, limit=window), LikeList)
    csv, tags = style_history(likes.items, with_prompts=vision)
    ctx.input["liked_generation_ids"] = [item.generation_id for item in likes.items]
    ctx.output.update(style_history_csv=csv, style_history_tags=tags, count=len(likes.items),
                      image_urls=[item.output_url for item in likes.items if item.output_url])
    ctx.vars["history"].update(vision_intelligence=vision, like_window=window, style_history_csv=csv,
                               style_history_tags=tags)
