"""Flows, MMA statuses (and which moves between them are allowed), customer event types."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

# --------------------------------------------------------------------------- enums


class Flow(StrEnum):
    STILL_CREATE = "still_create"
    STILL_TWEAK = "still_tweak"
    VIDEO_ANIMATE = "video_animate"
    VIDEO_TWEAK = "video_tweak"
    FINGERTIPS = "fingertips"  # an image-editing tool (eraser, flux_fill, expand, ...), paid from the pool

    @property
    def mode(self) -> Literal["still", "video", "fingertips"]:
        if self is Flow.FINGERTIPS:
            return "fingertips"
        return "still" if self.value.startswith("still") else "video"

    @property
    def is_tweak(self) -> bool:
        return self.value.endswith("tweak")


class MmaStatus(StrEnum):
    """Generation status; the order of this enum is the only direction status may move."""

    QUEUED = "queued"
    SCANNING = "scanning"
    PROMPTING = "prompting"
    GENERATING = "generating"
    POSTSCAN = "postscan"
    SUGGESTED = "suggested"
    DONE = "done"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def rank(self) -> int:
        return STATUS_ORDER.index(self)

    @property
    def is_terminal(self) -> bool:
        return self in (MmaStatus.SUGGESTED, MmaStatus.DONE, MmaStatus.ERROR, MmaStatus.CANCELLED)

    @property
    def mg_status(self) -> str:
        """The coarse `mg_status` mirror: pending / succeeded / failed."""
        if self in (MmaStatus.DONE, MmaStatus.SUGGESTED):
            return "succeeded"
        if self in (MmaStatus.ERROR, MmaStatus.CANCELLED):
            return "failed"
        return "pending"


STATUS_ORDER: list[MmaStatus] = list(MmaStatus)


def status_can_move(current: str | None, new: str) -> bool:
    """True when `new` is later than `current`; a replayed or late event never moves back, and
    nothing moves a generation out of a terminal status (done, error, cancelled are final)."""
    if current is None:
        return True
    try:
        stored = MmaStatus(current)
        return not stored.is_terminal and MmaStatus(new).rank > stored.rank
    except ValueError:
        return False


class EventType(StrEnum):
    LIKE = "like"
    DISLIKE = "dislike"
    DOWNLOAD = "download"
    PREFERENCE_SET = "preference_set"
    CREATE = "create"
    TWEAK = "tweak"
    FEEDBACK = "feedback"
    UNKNOWN = "unknown"


