"""Every bus message, in one module: streams, subjects, payload models and msg ids.

A model knows its subject and its deterministic `Nats-Msg-Id`; no caller builds them.
Readers ignore unknown fields so a newer writer never breaks an older reader.
Request/reply calls pair a request model (with `rpc_subject`) and a reply model.
"""

from __future__ import annotations

import uuid
from abc import abstractmethod
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = 1
MMA_VARS_VERSION = "2025-12-19"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


# --------------------------------------------------------------------------- streams


class Stream(StrEnum):
    COMMANDS = "MMA_COMMANDS"
    JOBS = "MMA_JOBS"
    EVENTS = "MMA_EVENTS"


STREAM_SUBJECTS: dict[Stream, list[str]] = {
    Stream.COMMANDS: ["mma.cmd.>"],
    Stream.JOBS: ["mma.job.>"],
    Stream.EVENTS: ["mma.evt.>"],
}

EVENTS_ALL = "mma.evt.>"
DEAD_LETTER_SUBJECT = "mma.evt.ops.dead_letter"
GENERATION_COMMANDS = "mma.cmd.generation.>"
GENERATION_JOBS = "mma.job.>"
FAILED_EVENTS = "mma.evt.*.failed"
CANCEL_REQUESTS = "mma.evt.*.cancel_requested"
TYPE_HEADER = "Mma-Type"


def generation_events(generation_id: str) -> str:
    """Filter subject of everything said about one generation (SSE, replay)."""
    return f"mma.evt.{generation_id}.>"


# --------------------------------------------------------------------------- enums


class Flow(StrEnum):
    STILL_CREATE = "still_create"
    STILL_TWEAK = "still_tweak"
    VIDEO_ANIMATE = "video_animate"
    VIDEO_TWEAK = "video_tweak"

    @property
    def mode(self) -> Literal["still", "video"]:
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


# --------------------------------------------------------------------------- base models


class Model(BaseModel):
    """Frozen, tolerant of extra fields (a newer writer never breaks an older reader)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class BusMessage(Model):
    """A message on a JetStream stream: knows its subject and its deterministic msg id."""

    schema_version: int = SCHEMA_VERSION

    @abstractmethod
    def subject(self) -> str: ...

    @abstractmethod
    def msg_id(self) -> str: ...

    def log_fields(self) -> dict[str, Any]:
        """Ids to bind to the log context while this message is handled."""
        fields: dict[str, Any] = {}
        for name in ("generation_id", "pass_id", "request_id"):
            value = getattr(self, name, None)
            if value:
                fields[name] = value
        return fields


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


# --------------------------------------------------------------------------- request/reply


class RpcRequest(Model):
    """A request/reply call; `rpc_subject` is served by a queue group of the owning service."""

    rpc_subject: ClassVar[str] = ""
    schema_version: int = SCHEMA_VERSION


class Ok(Model):
    ok: bool = True


# ---- ledger: credits


class CreditOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    INSUFFICIENT = "insufficient"


class CreditApply(RpcRequest):
    """Atomic balance change + `credit_transaction` row; `ref` takes effect at most once."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.credit.apply"
    pass_id: str
    delta: int
    ref: str  # e.g. debit:generation:<id>, refund:generation:<id>, topup:shopify:<order>
    reason: str = ""
    source: str = "mma"
    ref_type: str | None = None
    ref_id: str | None = None
    generation_id: str | None = None
    expires_at: datetime | None = None  # set mg_expires_at with a top-up
    audit: dict[str, Any] | None = None  # writes an admin_audit row in the same transaction


class CreditApplied(Model):
    outcome: CreditOutcome
    balance: int
    delta: int
    expires_at: datetime | None = None
    txn_id: str
    # a duplicate of an audited change: the balance right after the first apply (its audit row)
    first_balance: int | None = None


class CreditApplyBatch(RpcRequest):
    """Several credit applies in one ledger transaction (billing batches its debits).

    Each item keeps the single apply's rules (its ref at most once, never below zero);
    results come back in the same order. Items with `audit` are refused: admin changes
    go one at a time through `CreditApply`.
    """

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.credit.apply_batch"
    items: list[CreditApply] = Field(max_length=1000)


class CreditAppliedBatch(Model):
    results: list[CreditApplied]


# ---- ledger: customers


class EnsureCustomer(RpcRequest):
    rpc_subject: ClassVar[str] = "mma.rpc.ledger.customer.ensure"
    pass_id: str
    shopify_customer_id: str | None = None
    user_id: str | None = None
    email: str | None = None
    # > 0: grant these welcome credits in the same transaction, once, only to a pass id this
    # product created (a customer that existed before the migration has an opening-balance row)
    welcome_credits: int = 0


class GetCustomer(RpcRequest):
    rpc_subject: ClassVar[str] = "mma.rpc.ledger.customer.get"
    pass_id: str


class GetCustomerAccess(RpcRequest):
    """What a verified user may act as: admin (mg_admin_allowlist, by user id then email) and,
    when asked, whether a Shopify customer id is linked to them in mega_customers."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.customer.access"
    user_id: str
    email: str | None = None  # only a verified email
    shopify_customer_id: str | None = None


class CustomerAccess(Model):
    is_admin: bool = False
    shopify_linked: bool = False


class CustomerView(Model):
    pass_id: str
    credits: int
    expires_at: datetime | None = None
    created: bool = False  # true only on the call that created the row
    preferences: dict[str, Any] = Field(default_factory=dict)
    email: str | None = None
    user_id: str | None = None
    last_active: datetime | None = None
    created_at: datetime | None = None
    welcome: str | None = None  # applied / duplicate / ineligible, when welcome credits were asked for


# ---- ledger: generations


class GetGeneration(RpcRequest):
    rpc_subject: ClassVar[str] = "mma.rpc.ledger.generation.get"
    generation_id: str


class GenerationView(Model):
    """A `generation` row as the gateway and pipeline read it."""

    generation_id: str
    pass_id: str
    parent_id: str | None = None
    session_id: str | None = None
    mode: str | None = None
    type: str | None = None
    status: str  # mg_mma_status
    mg_status: str | None = None
    error: str | None = None
    prompt: str | None = None
    output_url: str | None = None
    output_key: str | None = None
    provider: str | None = None
    model: str | None = None
    platform: str | None = None
    vars: dict[str, Any] = Field(default_factory=dict)
    meta: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class ListSteps(RpcRequest):
    rpc_subject: ClassVar[str] = "mma.rpc.ledger.generation.steps"
    generation_id: str


class StepView(Model):
    step_no: int
    step_type: str
    status: str | None = None
    provider: str | None = None
    model: str | None = None
    latency_ms: int | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class StepList(Model):
    steps: list[StepView]


class CustomerHistory(RpcRequest):
    rpc_subject: ClassVar[str] = "mma.rpc.ledger.customer.history"
    pass_id: str
    limit: int = 200
    cursor: datetime | None = None  # created_at of the last row of the previous page


class SessionView(Model):
    session_id: str
    platform: str | None = None
    title: str | None = None
    created_at: datetime | None = None


class FeedbackView(Model):
    feedback_id: str
    pass_id: str
    result_type: str | None = None
    platform: str | None = None
    prompt: str | None = None
    comment: str | None = None
    image_url: str | None = None
    video_url: str | None = None
    created_at: datetime | None = None


class CreditTxnView(Model):
    txn_id: str
    delta: int
    reason: str | None = None
    source: str | None = None
    ref_type: str | None = None
    ref_id: str | None = None
    generation_id: str | None = None
    created_at: datetime | None = None


class HistoryPage(Model):
    pass_id: str
    credits: int
    expires_at: datetime | None = None
    generations: list[GenerationView]
    sessions: list[SessionView]
    feedbacks: list[FeedbackView]
    credit_txns: list[CreditTxnView] = Field(default_factory=list)
    next_cursor: datetime | None = None
    has_more: bool = False


class CustomerEvents(RpcRequest):
    rpc_subject: ClassVar[str] = "mma.rpc.ledger.customer.events"
    pass_id: str
    limit: int = 100


class EventView(Model):
    event_id: str
    event_type: str
    generation_id: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class EventList(Model):
    events: list[EventView]


class LikeWindow(RpcRequest):
    """The customer's last liked/downloaded generations, newest first (taste window)."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.customer.likes"
    pass_id: str
    limit: int = 5


class LikedItem(Model):
    generation_id: str
    output_url: str | None = None
    prompt: str | None = None
    tags: list[str] = Field(default_factory=list)


class LikeList(Model):
    items: list[LikedItem]


class GenerationCredits(RpcRequest):
    rpc_subject: ClassVar[str] = "mma.rpc.ledger.generation.credits"
    generation_id: str


class CreditTxnList(Model):
    txns: list[CreditTxnView]


class SoftDeleteHistory(RpcRequest):
    """Soft-deletes a row (by row id or generation id) only when it belongs to `pass_id`."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.history.delete"
    pass_id: str
    id: str


class DeleteResult(Model):
    deleted_count: int


# ---- ledger: ops reads


class ListErrors(RpcRequest):
    rpc_subject: ClassVar[str] = "mma.rpc.ledger.admin.errors"
    generation_id: str | None = None
    category: str | None = None
    limit: int = 100


class ErrorView(Model):
    id: str
    level: str
    actor_pass_id: str | None = None
    route: str | None = None
    method: str | None = None
    http_status: int | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None


class ErrorList(Model):
    errors: list[ErrorView]


class ListGenerations(RpcRequest):
    """Ops: all generations newest first (optionally one customer's)."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.admin.generations"
    pass_id: str | None = None
    limit: int = 100


class GenerationList(Model):
    generations: list[GenerationView]


class AdminSummary(RpcRequest):
    rpc_subject: ClassVar[str] = "mma.rpc.ledger.admin.summary"


class SummaryView(Model):
    total_customers: int
    total_generations: int
    counts_by_day: list[dict[str, Any]] = Field(default_factory=list)  # {day, record_type, count}


class ListCustomers(RpcRequest):
    rpc_subject: ClassVar[str] = "mma.rpc.ledger.admin.customers"
    limit: int = 200


class CustomerList(Model):
    customers: list[CustomerView]


class Reconcile(RpcRequest):
    """Check the MEGA invariants; `stuck_after_s` and `public_base` parametrise the checks."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.admin.reconcile"
    stuck_after_s: float = 900.0
    public_base: str | None = None
    provider_hosts: list[str] = Field(default_factory=list)


class ReconcileReport(Model):
    ok: bool
    checks: dict[str, int]  # check name -> number of breaches
    breaches: list[dict[str, Any]]
    totals: dict[str, Any] = Field(default_factory=dict)


class ChargedUnfinished(RpcRequest):
    """Debited generations with no terminal status and no refund, whose debit and last progress
    (the generation row or a step row changing) are older than their mode's window:
    `older_than_s` for stills, `video_older_than_s` (default the same) for videos."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.admin.charged_unfinished"
    older_than_s: float
    video_older_than_s: float | None = None
    limit: int = 500


class ChargedItem(Model):
    generation_id: str
    pass_id: str
    debit: int
    status: str | None = None
    charged_at: datetime | None = None
    mode: str | None = None  # still / video
    progress_at: datetime | None = None  # the last change of the generation or one of its steps


class ChargedList(Model):
    items: list[ChargedItem]


class RecentDurations(RpcRequest):
    """Mean time from accepted to done of the last `limit` finished generations (queue estimates)."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.generation.durations"
    limit: int = 20


class DurationStats(Model):
    mean_s: float | None = None
    samples: int = 0


# ---- ledger: versioned config


class ConfigEntry(Model):
    key: str
    version: int
    id: str  # app_config:<key>.v<N>
    value: dict[str, Any]


class GetActiveConfig(RpcRequest):
    """The highest enabled version of each key (missing keys are absent)."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.config.active"
    keys: list[str] = Field(default_factory=list)  # empty = every key


class ConfigMap(Model):
    entries: dict[str, ConfigEntry]


class SeedConfig(RpcRequest):
    """Insert v1 fallbacks that do not exist yet (never overwrites a version)."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.config.seed"
    entries: dict[str, dict[str, Any]]


class AddConfigVersion(RpcRequest):
    """Insert version N+1 of a key (immutable rows) and an admin_audit row."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.config.add"
    key: str
    value: dict[str, Any]
    actor: str = "admin"


# ---- billing


class EnsureWelcome(RpcRequest):
    """Ensure the customer row; a new pass id gets the welcome credits once."""

    rpc_subject: ClassVar[str] = "mma.rpc.billing.welcome"
    pass_id: str
    shopify_customer_id: str | None = None
    user_id: str | None = None
    email: str | None = None


class ShopifyOrder(RpcRequest):
    """The raw webhook body and its HMAC header, verified by billing."""

    rpc_subject: ClassVar[str] = "mma.rpc.billing.shopify_order"
    raw_body_b64: str
    hmac_header: str | None = None
    request_id: str = ""


class ShopifyOrderResult(Model):
    order_id: str
    already_processed: bool = False
    credited: int = 0
    reason: str | None = None
    pass_id: str | None = None
    balance: int | None = None
    expires_at: datetime | None = None


class AdminAdjust(RpcRequest):
    rpc_subject: ClassVar[str] = "mma.rpc.billing.adjust"
    pass_id: str
    delta: int
    reason: str = "admin_adjust"
    actor: str = "admin"
    request_id: str = Field(default_factory=new_id)
    # the client's Idempotency-Key: the credit ref is `admin:<pass_id>:<key>`, so a retry credits once
    idempotency_key: str | None = None


class AdjustResult(Model):
    pass_id: str
    credits_before: int
    credits_after: int
    expires_at: datetime | None = None
    outcome: CreditOutcome


class PriceList(RpcRequest):
    rpc_subject: ClassVar[str] = "mma.rpc.billing.prices"


class Prices(Model):
    still_create: int
    still_tweak: int
    video_animate: int
    video_tweak: int
