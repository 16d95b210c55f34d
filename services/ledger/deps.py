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
    # pass ids a committed projection batch ensured a customer row for: later batches skip the insert
    # (nothing in the product deletes a customer; a batch refused for one deleted out of band clears it)
    known_customers: set[str] = field(default_factory=set)
