"""The customer's taste, applied deterministically in code (never trusted to the model).

Every hard block in the preference snapshot becomes an explicit constraint appended
to every prompt a run produces: the GPT input and the final provider prompt.
"""

from __future__ import annotations

from collections import Counter

from libs.schemas import LikedItem

HARD_BLOCK_CONSTRAINTS: dict[str, str] = {
    "motion.light_flicker": "no flicker, no strobing, no flare, stable lighting",
    "motion.fast_cuts": "no fast cuts, one continuous shot",
    "motion.camera_shake": "no camera shake, steady camera",
    "style.text_overlay": "no text, no letters, no watermark",
    "style.people": "no people, no faces, no hands",
    "style.neon": "no neon colours, no glow",
    "style.busy_background": "no busy background, clean backdrop",
}


def constraint_for(tag: str) -> str:
    known = HARD_BLOCK_CONSTRAINTS.get(tag)
    if known:
        return known
    words = tag.split(".", 1)[-1].replace("_", " ").replace("-", " ").strip()
    return f"avoid {words}" if words else ""


def constraints_for(hard_blocks: list[str]) -> list[str]:
    """One constraint per hard block, in a stable order, without repeats."""
    seen: list[str] = []
    for tag in sorted(set(hard_blocks)):
        text = constraint_for(tag)
        if text and text not in seen:
            seen.append(text)
    return seen


def constraints_line(constraints: list[str]) -> str:
    return f"Constraints: {'; '.join(constraints)}." if constraints else ""


def with_constraints(prompt: str, constraints: list[str]) -> str:
    """The prompt with the constraints line appended once (idempotent)."""
    line = constraints_line(constraints)
    if not line or line in prompt:
        return prompt
    return f"{prompt.rstrip()} {line}".strip()


def style_history(items: list[LikedItem], with_prompts: bool) -> tuple[str, list[str]]:
    """(style_history_csv, tags) of the like window; prompts only with vision intelligence."""
    counter: Counter[str] = Counter()
    for item in items:
        counter.update(item.tags)
    tags = [tag for tag, _ in counter.most_common(12)]
    cells = list(tags)
    if with_prompts:
        cells += [(item.prompt or "")[:80].replace(",", " ") for item in items if item.prompt]
    return ", ".join(cells), tags
