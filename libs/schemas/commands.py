"""A generation request as the gateway sends it (command) and as billing hands it to the pipeline (job)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import Field

from libs.schemas.base import BusMessage, Model, utcnow
from libs.schemas.enums import Flow
from libs.schemas.fingertips import FingertipsRequest

# --------------------------------------------------------------------------- generation request


class Assets(Model):
    """Permanent URLs of what the customer gave (ids are accepted as URLs too)."""

    product_image_url: str | None = None
    logo_image_url: str | None = None
    inspiration_image_urls: list[str] = Field(default_factory=list, max_length=4)
    style_hero_image_url: str | None = None
    input_still_image_url: str | None = None
    input_still_generation_id: str | None = None
    end_image_url: str | None = None


class Inputs(Model):
    user_brief: str = ""
    style: str = ""
    motion_user_brief: str = ""
    movement_style: str = ""
    aspect_ratio: str | None = None
    platform: str | None = None
    type_for_me: bool = False
    suggest_only: bool = False
    duration_s: int | None = None


class Feedback(Model):
    still_feedback: str = ""
    motion_feedback: str = ""


class GenerationRequest(Model):
    """The normalised request of any flow, as the gateway understood it."""

    assets: Assets = Field(default_factory=Assets)
    inputs: Inputs = Field(default_factory=Inputs)
    feedback: Feedback = Field(default_factory=Feedback)
    vision_intelligence: bool = True
    settings: dict[str, dict[str, Any]] = Field(default_factory=dict)
    fingertips: FingertipsRequest | None = None  # the edit of a `fingertips` flow


class GenerationRequested(BusMessage):
    """Command (gateway -> billing): a customer asked for a generation."""

    generation_id: str
    pass_id: str
    flow: Flow
    parent_generation_id: str | None = None
    request: GenerationRequest = Field(default_factory=GenerationRequest)
    request_id: str = ""
    session_id: str | None = None
    platform: str = "web"
    source: Literal["mma", "legacy"] = "mma"
    deadline: datetime | None = None
    requested_at: datetime = Field(default_factory=utcnow)

    def subject(self) -> str:
        return f"mma.cmd.generation.{self.generation_id}"

    def msg_id(self) -> str:
        return f"cmd:{self.generation_id}"


class GenerationJob(BusMessage):
    """Job (billing -> pipeline): a charged generation ready to run."""

    command: GenerationRequested
    price: int
    accepted_at: datetime = Field(default_factory=utcnow)

    @property
    def generation_id(self) -> str:
        return self.command.generation_id

    @property
    def pass_id(self) -> str:
        return self.command.pass_id

    def subject(self) -> str:
        return f"mma.job.{self.command.generation_id}"

    def msg_id(self) -> str:
        return f"job:{self.command.generation_id}"

    def log_fields(self) -> dict[str, Any]:
        return self.command.log_fields()


