"""Request/reply: the ledger's reads of generations, history, events and the ops plane."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from libs.schemas.base import Model
from libs.schemas.rpc import CustomerView, RpcRequest
from libs.schemas.rpc_config import ConfigEntry

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


class RunStartRead(RpcRequest):
    """What a run reads before its first step, in one call: the customer (taste), the like window, the
    generation it starts from, and the active config, left out of the answer while it is still the one
    tagged `config_tag` (the caller's copy): a new version still reaches the next run."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.run.start"
    pass_id: str
    like_limit: int | None = None  # None: no like window
    parent_generation_id: str | None = None
    config_keys: list[str] = Field(default_factory=list)  # empty = every key
    config_tag: str = ""


class RunStartFacts(Model):
    customer: CustomerView
    likes: list[LikedItem] | None = None  # None: not asked
    parent: GenerationView | None = None  # None: not asked, or no such generation (yet)
    config_tag: str  # a digest of the config rows (ids and row versions): it changes when they do
    config: dict[str, ConfigEntry] | None = None  # None: unchanged since the request's config_tag


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


