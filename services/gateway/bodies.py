"""Request bodies of the create routes, accepting the field names of ROUTES.md and MMA.md.

Every field is optional and unknown fields are kept, so an older or newer client is
never refused for a name; `to_request` folds the aliases into one `GenerationRequest`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, model_validator

from libs.schemas import Assets, Feedback, GenerationRequest, Inputs

ASPECT_RATIOS = ("9:16", "3:4", "2:3", "1:1", "3:2", "16:9")


INT64 = 2**63
T = TypeVar("T")


def storable_problem(value: object) -> str | None:
    """Why `value` could not be stored as Postgres text/jsonb or sent as UTF-8 JSON (None when it can).

    NUL is refused by text and jsonb, a lone surrogate by every UTF-8 encoder, and an
    integer past 64 bits by the JSON codec of the ledger: each would fail far from the
    request, as a 500 or a dead-lettered event, so the edge answers 400 instead.
    """
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return "text must not contain NUL characters"
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return "text must be valid Unicode (no lone surrogates)"
        elif isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if not -INT64 <= item < INT64:
                return "integers must fit in 64 bits"
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return None


class Body(BaseModel):
    """Every JSON body: unknown fields kept, nothing that could not be stored let through."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def storable(cls, data: object) -> object:
        problem = storable_problem(data)
        if problem is not None:
            raise ValueError(problem)
        return data


class PassFields(Body):
    passId: str | None = None
    pass_id: str | None = None
    customerId: str | None = None
    customer_id: str | None = None


def first(*values: T | None) -> T | None:
    """The first value that is present and not blank (text stripped)."""
    for value in values:
        if isinstance(value, str):
            if value.strip():
                return cast(T, value.strip())
        elif value is not None:
            return value
    return None


def first_text(*values: object) -> str | None:
    found = first(*values)
    return None if found is None else str(found)


def style_of(style: object, key: object, keys: object) -> str:
    parts: list[str] = []
    for value in (style, key, *(keys if isinstance(keys, list) else [keys])):
        if isinstance(value, str) and value.strip() and value.strip() not in parts:
            parts.append(value.strip())
    return ", ".join(parts)


def settings_of(settings: dict[str, object] | None) -> dict[str, dict[str, Any]]:
    """The per-provider settings objects of a body (free-form JSON handed on to the pipeline)."""
    return {k: v for k, v in (settings or {}).items() if isinstance(v, dict)}


def aspect_of(value: object) -> str | None:
    return value if isinstance(value, str) and value in ASPECT_RATIOS else None


class HistoryIn(Body):
    sessionId: str | None = None
    session_id: str | None = None
    sessionTitle: str | None = None
    vision_intelligence: bool | None = None


class ModeIn(Body):
    type_for_me: bool | None = None
    suggest_only: bool | None = None


class CreateCommon(PassFields):
    settings: dict[str, object] | None = None
    history: HistoryIn | None = None
    idempotency_key: str | None = None
    deadline: datetime | None = Field(None, description="ISO time after which the request must not start")
    sessionId: str | None = None
    session_id: str | None = None
    platform: str | None = None

    def session(self) -> str | None:
        h = self.history or NO_HISTORY
        return first_text(h.sessionId, h.session_id, self.sessionId, self.session_id)

    def idem_key(self) -> str | None:
        extra = self.model_extra or {}
        inputs = extra.get("inputs") if isinstance(extra.get("inputs"), dict) else None
        return first_text(self.idempotency_key, (inputs or {}).get("idempotency_key"))


# --------------------------------------------------------------------------- still


class StillAssetsIn(Body):
    product_image_url: str | None = None
    product_image_id: str | None = None
    logo_image_url: str | None = None
    logo_image_id: str | None = None
    inspiration_image_urls: list[str] | None = None
    inspiration_image_ids: list[str] | None = None
    style_hero_image_url: str | None = None
    style_hero_image_id: str | None = None


class StillInputsIn(Body):
    brief: str | None = None
    userBrief: str | None = None
    prompt: str | None = None
    style: str | None = None
    tone: str | None = None
    platform: str | None = None
    aspect_ratio: str | None = None
    stylePresetKey: str | None = None
    stylePresetKeys: list[str] | None = None
    minaVisionEnabled: bool | None = None
    still_lane: str | None = None
    lane: str | None = None
    still_resolution: str | None = None
    idempotency_key: str | None = None


class StillCreateBody(CreateCommon):
    assets: StillAssetsIn | None = None
    inputs: StillInputsIn | None = None
    feedback: object = None
    prompts: object = None

    def to_request(self) -> GenerationRequest:
        a = self.assets or NO_STILL_ASSETS
        i = self.inputs or NO_STILL_INPUTS
        h = self.history or NO_HISTORY
        inspirations = [u for u in (a.inspiration_image_urls or a.inspiration_image_ids or []) if u][:4]
        vision = first(h.vision_intelligence, i.minaVisionEnabled)
        return GenerationRequest(
            assets=Assets(
                product_image_url=first(a.product_image_url, a.product_image_id),
                logo_image_url=first(a.logo_image_url, a.logo_image_id),
                inspiration_image_urls=inspirations,
                style_hero_image_url=first(a.style_hero_image_url, a.style_hero_image_id),
            ),
            inputs=Inputs(
                user_brief=first(i.userBrief, i.brief, i.prompt) or "",
                style=style_of(i.style or i.tone, i.stylePresetKey, i.stylePresetKeys),
                aspect_ratio=aspect_of(i.aspect_ratio),
                platform=first(i.platform, self.platform),
            ),
            vision_intelligence=True if vision is None else bool(vision),
            settings=settings_of(self.settings),
        )


# --------------------------------------------------------------------------- video


class VideoAssetsIn(Body):
    start_image_url: str | None = None
    input_still_image_id: str | None = None
    input_still_image_url: str | None = None
    input_still_generation_id: str | None = None
    still_generation_id: str | None = None
    end_image_url: str | None = None
    kling_image_urls: list[str] | None = None


class VideoInputsIn(Body):
    motionDescription: str | None = None
    motion_user_brief: str | None = None
    prompt: str | None = None
    platform: str | None = None
    aspect_ratio: str | None = None
    selected_movement_style: str | None = None
    movement_style: str | None = None
    type_for_me: bool | None = None
    suggest_only: bool | None = None
    duration_s: int | None = Field(None, ge=1, le=10)
    idempotency_key: str | None = None


class VideoAnimateBody(CreateCommon):
    assets: VideoAssetsIn | None = None
    inputs: VideoInputsIn | None = None
    mode: ModeIn | None = None
    feedback: object = None
    parent_generation_id: str | None = None
    generation_id: str | None = None

    def still_generation(self) -> str | None:
        a = self.assets or NO_VIDEO_ASSETS
        return first_text(a.input_still_generation_id, a.still_generation_id, self.parent_generation_id,
                     self.generation_id)

    def to_request(self) -> GenerationRequest:
        a = self.assets or NO_VIDEO_ASSETS
        i = self.inputs or NO_VIDEO_INPUTS
        m = self.mode or NO_MODE
        kling = settings_of(self.settings).get("kling", {})
        duration = first(i.duration_s, kling.get("duration_s"), kling.get("duration"))
        return GenerationRequest(
            assets=Assets(
                input_still_image_url=first(a.start_image_url, a.input_still_image_url, a.input_still_image_id,
                                            *(a.kling_image_urls or [])[:1]),
                input_still_generation_id=self.still_generation(),
                end_image_url=a.end_image_url,
            ),
            inputs=Inputs(
                motion_user_brief=first(i.motionDescription, i.motion_user_brief, i.prompt) or "",
                movement_style=first(i.selected_movement_style, i.movement_style) or "",
                aspect_ratio=aspect_of(i.aspect_ratio),
                platform=first(i.platform, self.platform),
                type_for_me=bool(i.type_for_me or m.type_for_me),
                suggest_only=bool(i.suggest_only or m.suggest_only),
                duration_s=int(duration) if isinstance(duration, int | float) else None,
            ),
            settings=settings_of(self.settings),
        )


# --------------------------------------------------------------------------- tweaks


class FeedbackIn(Body):
    still_feedback: str | None = None
    motion_feedback: str | None = None
    comment: str | None = None
    feedback: str | None = None


class TweakBody(CreateCommon):
    inputs: dict[str, object] | None = None
    feedback: FeedbackIn | str | None = None

    def feedback_text(self, motion: bool) -> str:
        fb = self.feedback
        if isinstance(fb, str):
            return fb.strip()
        fb = fb or NO_FEEDBACK
        inputs = self.inputs or {}
        own = fb.motion_feedback if motion else fb.still_feedback
        return first_text(own, fb.comment, fb.feedback,
                          inputs.get("motion_feedback" if motion else "still_feedback"), inputs.get("feedback"),
                          inputs.get("comment")) or ""

    def to_request(self, motion: bool) -> GenerationRequest:
        text = self.feedback_text(motion)
        inputs = self.inputs or {}
        return GenerationRequest(
            feedback=Feedback(still_feedback="" if motion else text, motion_feedback=text if motion else ""),
            inputs=Inputs(aspect_ratio=aspect_of(inputs.get("aspect_ratio")),
                          platform=first_text(inputs.get("platform"), self.platform)),
            settings=settings_of(self.settings),
        )


# --------------------------------------------------------------------------- events


class EventBody(PassFields):
    generation_id: str | None = None
    generationId: str | None = None
    event_type: str | None = None
    type: str | None = None
    payload: dict[str, object] | None = None


# read-only stand-ins for a part a body left out (each create built and validated them anew)
NO_HISTORY, NO_STILL_ASSETS, NO_STILL_INPUTS = HistoryIn(), StillAssetsIn(), StillInputsIn()
NO_VIDEO_ASSETS, NO_VIDEO_INPUTS, NO_MODE, NO_FEEDBACK = VideoAssetsIn(), VideoInputsIn(), ModeIn(), FeedbackIn()
