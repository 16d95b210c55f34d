"""Request/reply: the base request, and the ledger's credit and customer calls."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import Field

from libs.schemas.base import SCHEMA_VERSION, Model

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


