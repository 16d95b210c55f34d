"""What a run has decided so far: with the job, enough to continue it after a crash.

The parts are JSON objects typed as TypedDicts rather than classes, on purpose: the
checkpoint stores them as they are and a resumed run reads them back without a
conversion, so a state written by an older version loads the same way. Only the vars
stay loosely typed: they are the MMA variable map (MMA.md), a JSON document published
as it is with the generation's end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict

import orjson

MmaVars = dict[str, Any]  # the MMA variable map (MMA.md): a JSON document, published as it is with the end
StepArg = dict[str, str | int]  # a plan entry's argument: {"url", "index"} of a scan, {"provider"} of a generate
PlanEntry = tuple[str, StepArg]  # (step_type, arg); a JSON array once checkpointed, unpacked the same way


class RunIds(TypedDict):
    """The ids every message of the run carries."""

    generation_id: str
    pass_id: str


class ParentFacts(TypedDict, total=False):
    """What a flow uses of the finished generation it starts from; {} when it starts from none."""

    generation_id: str
    output_url: str | None
    prompt: str | None
    caption: str | None
    still_crt: str | None
    motion_prompt: str | None
    input_still_image_id: str | None
    settings: dict[str, Any]  # the parent's resolved provider settings, as its vars hold them (JSON)


class Prep(TypedDict, total=False):
    """What the run read at its start ({} until then); a resume uses the same, even if the config changed."""

    config: dict[str, dict[str, Any]]  # the config snapshot (`ActiveConfig.to_json`: ledger rows as JSON)
    hard_blocks: list[str]
    constraints: list[str]
    customer_settings: dict[str, dict[str, Any]]  # the customer's presets per provider (JSON from the ledger)
    parent: ParentFacts
    plan: list[PlanEntry]


class Pending(TypedDict):
    """A generator prediction that step `step_no` created and that has not finished yet."""

    step_no: int
    prediction_id: str


class OutboxItem(TypedDict):
    """One message of the outbox, as its class name and its JSON (`MESSAGE_TYPES` decodes it): read back
    as a dict; while queued, the published JSON itself (an orjson.Fragment, embedded as it is)."""

    type: str
    data: dict[str, Any] | orjson.Fragment


def _unprepared() -> Prep:
    return Prep()


@dataclass
class RunState:
    """Everything a run decided so far; the job plus this is enough to continue."""

    generation_id: str
    prep: Prep = field(default_factory=_unprepared)
    step_count: int = 0  # steps completed (and recorded)
    status: str = "queued"
    scan_lines: list[str] = field(default_factory=list)
    vars: MmaVars = field(default_factory=dict)
    pending: Pending | None = None
    outbox: list[OutboxItem] = field(default_factory=list)  # the messages of the last transition only
    terminal: bool = False
    provider_started: bool = False  # a generator prediction was created (it may have cost us money)
