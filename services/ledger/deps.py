"""What the ledger's handlers need: the one asyncpg pool, settings, and the bus (stream reads)."""

from __future__ import annotations

from dataclasses import dataclass, field

from nats.js import JetStreamContext

from libs.bus import Bus
from libs.settings import Settings
from services.ledger.adapters.pg import Pool
from services.ledger.credit_queue import CreditQueue


@dataclass(frozen=True)
class LedgerDeps:
    pool: Pool  # an asyncpg pool
    settings: Settings
    js: JetStreamContext | None = None  # reconcile counts the waiting dead letters through it
    bus: Bus | None = None  # the stream decides between two ends projected out of order (ends.py)
    credit_queue: CreditQueue = field(default_factory=CreditQueue)  # concurrent applies share a transaction
