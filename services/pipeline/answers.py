"""The JSON answers the pipeline expects from a prompt model, one pydantic model per task.

A model answer is trusted only after it validates here; missing keys or prose raise
GPT_SCHEMA_ERROR at the adapter edge. `offline` builds the deterministic answer the
offline provider gives, from the same user text the real model would read.
"""

from __future__ import annotations

import re
from abc import abstractmethod

from pydantic import BaseModel, ConfigDict, Field


def _fields_of(user: str) -> dict[str, str]:
    """`key: value` lines of a prompt input, in order (the offline writer's raw material)."""
    found: dict[str, str] = {}
    for line in user.splitlines():
        match = re.match(r"^\s*([A-Za-z_ ]+):\s*(.+)$", line)
        if match and match.group(2).strip() not in ("", "-", "none"):
            found[match.group(1).strip().lower().replace(" ", "_")] = match.group(2).strip()
    return found


def _compose(user: str, keys: tuple[str, ...], lead: str) -> str:
    fields = _fields_of(user)
    parts = [fields[k] for k in keys if k in fields]
    text = "; ".join(parts) if parts else user.strip().splitlines()[0] if user.strip() else "a clean composition"
    return f"{lead} {text}".strip()[:900]


class Answer(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class WrittenAnswer(Answer):
    """An answer the offline writer can compose from the prompt text alone (scans need pixels)."""

    @classmethod
    @abstractmethod
    def offline(cls, user: str) -> WrittenAnswer: ...


class ScanAnswer(Answer):
    crt: str = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)
    userMessage_line: str = Field(min_length=1)


class ReaderAnswer(WrittenAnswer):
    clean_prompt: str = Field(min_length=1)
    userMessage_final: str = Field(min_length=1)

    @classmethod
    def offline(cls, user: str) -> ReaderAnswer:
        prompt = _compose(
            user,
            ("user_brief", "style", "product", "logo", "inspiration", "style_history", "constraints"),
            "Editorial product still:",
        )
        return cls(clean_prompt=prompt, userMessage_final="Composing your image now, light first, then detail.")


class FeedbackStillAnswer(WrittenAnswer):
    prompt: str = Field(min_length=1)
    userMessage_final: str = "Reworking your image with your notes."

    @classmethod
    def offline(cls, user: str) -> FeedbackStillAnswer:
        prompt = _compose(user, ("feedback", "previous_prompt", "previous_caption", "constraints"), "Revised still:")
        return cls(prompt=prompt)


class MotionAnswer(WrittenAnswer):
    motion_prompt: str = Field(min_length=1)

    @classmethod
    def offline(cls, user: str) -> MotionAnswer:
        prompt = _compose(
            user, ("motion_brief", "movement_style", "still_caption", "constraints"), "Slow cinematic motion:"
        )
        return cls(motion_prompt=prompt)


class MotionSuggestionAnswer(WrittenAnswer):
    motion_sugg_prompt: str = Field(min_length=1)

    @classmethod
    def offline(cls, user: str) -> MotionSuggestionAnswer:
        prompt = _compose(
            user, ("still_caption", "movement_style", "constraints"), "Suggested motion: gentle push-in on"
        )
        return cls(motion_sugg_prompt=prompt)


class FeedbackMotionAnswer(WrittenAnswer):
    motion_prompt: str = Field(min_length=1)

    @classmethod
    def offline(cls, user: str) -> FeedbackMotionAnswer:
        prompt = _compose(user, ("feedback", "previous_motion_prompt", "constraints"), "Revised motion:")
        return cls(motion_prompt=prompt)
