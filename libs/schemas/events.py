"""What happened, on the EVENTS stream: a generation's life, customer and ops events, dead letters."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import Field

from libs.schemas.base import BusMessage, new_id, utcnow
from libs.schemas.commands import GenerationJob, GenerationRequest, GenerationRequested
from libs.schemas.enums import Flow, MmaStatus
from libs.schemas.fingertips import PoolCharge
from libs.schemas.streams import DEAD_LETTER_SUBJECT

# --------------------------------------------------------------------------- generation events


class GenerationEvent(BusMessage):
    """An event about one generation: subject `mma.evt.<generation_id>.<kind>`."""

    kind: ClassVar[str] = ""
    generation_id: str
    pass_id: str
    at: datetime = Field(default_factory=utcnow)

    def subject(self) -> str:
        return f"mma.evt.{self.generation_id}.{self.kind}"

    def msg_id(self) -> str:
        return f"{self.kind}:{self.generation_id}"


class GenerationAccepted(GenerationEvent):
    """Billing charged the generation; the ledger creates its `generation` row (queued)."""

    kind: ClassVar[str] = "accepted"
    flow: Flow
    parent_generation_id: str | None = None
    price: int
    balance: int
    request: GenerationRequest = Field(default_factory=GenerationRequest)
    session_id: str | None = None
    platform: str = "web"
    request_id: str = ""
    pool: PoolCharge | None = None  # a fingertips edit: what its draw from the pool did (price is then 0)


class GenerationRejected(GenerationEvent):
    """Billing refused the generation (no charge, no job): e.g. INSUFFICIENT_CREDITS."""

    kind: ClassVar[str] = "rejected"
    flow: Flow
    code: str
    message: str
    balance: int = 0
    price: int = 0


class StatusChanged(GenerationEvent):
    kind: ClassVar[str] = "status"
    status: MmaStatus
    queue_position: int | None = None

    def msg_id(self) -> str:
        return f"status:{self.generation_id}:{self.status.value}"


class ScanLine(GenerationEvent):
    """A short friendly line shown while the customer waits (persisted at once)."""

    kind: ClassVar[str] = "scan_line"
    index: int
    text: str

    def msg_id(self) -> str:
        return f"scan_line:{self.generation_id}:{self.index}"


class StepPhase(StrEnum):
    STARTED = "started"  # recorded before a provider wait, carries the prediction id
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class StepRecorded(GenerationEvent):
    """One `mma_step` row: payload = {input, output, timing, error}."""

    kind: ClassVar[str] = "step"
    step_no: int
    step_type: str
    phase: StepPhase = StepPhase.SUCCEEDED
    provider: str | None = None
    model: str | None = None
    latency_ms: int | None = None
    payload: dict[str, Any] = Field(default_factory=dict)

    def msg_id(self) -> str:
        return f"step:{self.generation_id}:{self.step_no}:{self.phase.value}"


class GenerationDone(GenerationEvent):
    kind: ClassVar[str] = "done"
    status: MmaStatus = MmaStatus.DONE  # DONE, or SUGGESTED for suggest-only
    vars: dict[str, Any]
    output_url: str | None = None
    output_key: str | None = None
    prompt: str | None = None
    provider: str | None = None
    model: str | None = None
    content_type: Literal["image", "motion", "text"] = "image"


class GenerationFailed(GenerationEvent):
    """Both log planes come from this: run plane (generation + step) and ops plane (error row)."""

    kind: ClassVar[str] = "failed"
    code: str
    message: str  # short, UI-safe
    step_type: str | None = None
    step_no: int | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    detail: dict[str, Any] = Field(default_factory=dict)  # the ops-plane mg_detail
    status: MmaStatus = MmaStatus.ERROR  # ERROR, or CANCELLED


class CancelRequested(GenerationEvent):
    """Someone (the owner or an admin) asked to stop a generation; the pipeline running it ends it.

    Published once per generation (the msg id dedupes repeated clicks). A job picked up
    later checks for this event first, so a cancel of a still-queued job is never lost.
    """

    kind: ClassVar[str] = "cancel_requested"
    requested_by: Literal["owner", "admin", "sweeper"] = "owner"  # sweeper: ends STUCK_TIMEOUT, refunded
    request_id: str = ""


class GenerationRefunded(GenerationEvent):
    kind: ClassVar[str] = "refunded"
    amount: int
    balance: int
    pool_amount: float | None = None  # a fingertips edit: its cost, back to the pool (amount is then 0)


# --------------------------------------------------------------------------- customer and ops events


class CustomerEventRecorded(BusMessage):
    """An `mma_event` row (like, download, preference_set, ...) plus a preference delta."""

    event_id: str
    pass_id: str
    event_type: str
    generation_id: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    add_hard_blocks: list[str] = Field(default_factory=list)
    tag_weight_deltas: dict[str, float] = Field(default_factory=dict)
    request_id: str = ""
    at: datetime = Field(default_factory=utcnow)

    def subject(self) -> str:
        return f"mma.evt.cust.event.{self.event_id}"

    def msg_id(self) -> str:
        return f"event:{self.event_id}"


class SessionStarted(BusMessage):
    session_id: str
    pass_id: str
    platform: str = "web"
    title: str = "Mina session"
    meta: dict[str, Any] = Field(default_factory=dict)
    at: datetime = Field(default_factory=utcnow)

    def subject(self) -> str:
        return f"mma.evt.cust.session.{self.session_id}"

    def msg_id(self) -> str:
        return f"session:{self.session_id}"


class FeedbackRecorded(BusMessage):
    """A legacy `/feedback/like` row (record type `feedback`)."""

    feedback_id: str
    pass_id: str
    generation_id: str | None = None
    session_id: str | None = None
    result_type: str = "image"
    platform: str | None = None
    prompt: str | None = None
    comment: str | None = None
    image_url: str | None = None
    video_url: str | None = None
    liked: bool = True
    at: datetime = Field(default_factory=utcnow)

    def subject(self) -> str:
        return f"mma.evt.cust.feedback.{self.feedback_id}"

    def msg_id(self) -> str:
        return f"feedback:{self.feedback_id}"


class OpsLogged(BusMessage):
    """An ops-plane `mega_admin` row of type error or warn (mg_detail as in MMA.md)."""

    log_id: str = Field(default_factory=new_id)
    level: Literal["error", "warn"] = "error"
    actor_pass_id: str | None = None
    route: str | None = None
    method: str | None = None
    http_status: int | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    at: datetime = Field(default_factory=utcnow)

    def subject(self) -> str:
        return f"mma.evt.ops.{self.level}"

    def msg_id(self) -> str:
        return f"{self.level}:{self.log_id}"


class DeadLettered(BusMessage):
    """A message no handler could take: its raw bytes, where it came from and why."""

    original_subject: str
    original_stream: str | None = None
    stream_seq: int | None = None
    deliveries: int | None = None
    reason: str
    data: str  # the original payload, decoded as text with replacement
    at: datetime = Field(default_factory=utcnow)
    consumer: str | None = None  # the durable that gave it up
    dead_letter_seq: int | None = None  # its sequence in the retained dead-letter stream
    code: str | None = None  # INVALID_MESSAGE (bad data, a refused row), else the error's code

    def subject(self) -> str:
        return DEAD_LETTER_SUBJECT

    def msg_id(self) -> str:
        by = f"{self.consumer}:" if self.consumer else ""
        return f"dlq:{by}{self.original_stream}:{self.stream_seq}:{self.original_subject}"


# Everything the EVENTS stream carries, by the `Mma-Type` header value.
EVENT_TYPES: dict[str, type[BusMessage]] = {
    cls.__name__: cls
    for cls in (
        GenerationAccepted, GenerationRejected, StatusChanged, ScanLine, StepRecorded, GenerationDone,
        GenerationFailed, GenerationRefunded, CancelRequested, CustomerEventRecorded, SessionStarted,
        FeedbackRecorded, OpsLogged, DeadLettered,
    )
}
MESSAGE_TYPES: dict[str, type[BusMessage]] = {
    **EVENT_TYPES,
    GenerationRequested.__name__: GenerationRequested,
    GenerationJob.__name__: GenerationJob,
}


