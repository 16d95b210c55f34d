"""What the ledger's handlers need: the one asyncpg pool, settings, and the bus (stream reads)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from nats.js import JetStreamContext

from libs.bus import Bus
from libs.settings import Settings


@dataclass(frozen=True)
class LedgerDeps:
    pool: asyncpg.Pool
    settings: Settings
    js: JetStreamContext | None = None  # reconcile counts the waiting dead letters through it
    bus: Bus | None = None  # the stream decides between two ends projected out of order (ends.py)
