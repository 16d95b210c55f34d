"""Fingertips (image-editing tools): the request a command carries, and the ledger's pool calls.

Amounts of the pool are credits in hundredths (0.5, 0.2, 0.1), carried as floats rounded to
two decimals; the ledger holds them as `numeric(12,2)`, so sums are exact there.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar

from pydantic import Field

from libs.schemas.base import Model
from libs.schemas.rpc import RpcRequest


class FingertipsRequest(Model):
    """One edit as the gateway validated it: the tool and its inputs (image URLs already ours or checked)."""

    model_key: str
    inputs: dict[str, Any] = Field(default_factory=dict)


class PoolCharge(Model):
    """What billing's draw did for one edit (upstream's charge result, in our words)."""

    cost: float
    pool_before: float
    pool_after: float
    matchas_deducted: int = 0  # 1 when the pool was refilled with one whole credit
    model_key: str = ""


# ---- ledger: the pool


class PoolOutcome(StrEnum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"  # this generation already drew (or was already refunded): nothing changed
    INSUFFICIENT = "insufficient"  # pool < cost and less than one credit: nothing written
    NO_DRAW = "no_draw"  # a refund of a generation that never drew from the pool


class PoolDraw(RpcRequest):
    """Take `cost` from the pool for one edit, refilling it with one whole credit when it is short.

    Atomic per customer (one SQL function, the customer row locked); ref `fingertips:draw:<gid>`
    (and `fingertips:refill:<gid>`) at most once."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.pool.draw"
    pass_id: str
    generation_id: str
    cost: float = Field(gt=0, le=1)
    model_key: str = ""


class PoolDrawn(Model):
    outcome: PoolOutcome
    cost: float
    pool_before: float
    pool_after: float
    matchas_deducted: int = 0
    balance: int
    expires_at: datetime | None = None


class PoolRefund(RpcRequest):
    """Give a failed edit's cost back to the pool, once (`fingertips:refund:<gid>`); never a credit."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.pool.refund"
    generation_id: str


class PoolRefunded(Model):
    outcome: PoolOutcome
    amount: float
    pool: float
    balance: int


class DrawnUnfinished(RpcRequest):
    """Edits that drew from the pool, have no refund and no terminal status, and whose draw and last
    progress are older than `older_than_s`: the stuck sweeper's fingertips candidates (ChargedList,
    debit 0, mode `fingertips`)."""

    rpc_subject: ClassVar[str] = "mma.rpc.ledger.pool.drawn_unfinished"
    older_than_s: float
    limit: int = 500


class GetPool(RpcRequest):
    rpc_subject: ClassVar[str] = "mma.rpc.ledger.pool.get"
    pass_id: str


class PoolView(Model):
    pass_id: str
    pool: float
    balance: int
    expires_at: datetime | None = None
