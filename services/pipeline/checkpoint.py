"""Run checkpoints in a JetStream KV bucket: what a redelivered job needs to resume.

A step's messages are written to the checkpoint (the outbox) BEFORE they are
published, so a crash between the two republishes exactly the same messages (same
msg ids, same content) instead of re-running the step. A pending prediction id is
checkpointed before the wait, so a resume reuses it instead of creating another.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import nats.js.errors
import orjson
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

BUCKET = "MMA_RUNS"
TTL_S = 7 * 86400


@dataclass
class RunState:
    """Everything a run decided so far; the job plus this is enough to continue."""

    generation_id: str
    prep: dict[str, Any] = field(default_factory=dict)  # config snapshot, customer taste, parent, plan
    step_count: int = 0  # steps completed (and recorded)
    status: str = "queued"
    scan_lines: list[str] = field(default_factory=list)
    vars: dict[str, Any] = field(default_factory=dict)
    pending: dict[str, Any] | None = None  # {step_no, prediction_id, input, model}
    outbox: list[dict[str, Any]] = field(default_factory=list)  # [{type, data}] of the last transition
    terminal: bool = False
    provider_started: bool = False  # a generator prediction was created (it may have cost us money)


class CheckpointStore:
    """One KV key per generation id; values are JSON."""

    def __init__(self, kv: KeyValue) -> None:
        self.kv = kv

    @classmethod
    async def open(cls, js: JetStreamContext, bucket: str = BUCKET) -> CheckpointStore:
        try:
            kv = await js.key_value(bucket)
        except nats.js.errors.BucketNotFoundError:
            kv = await js.create_key_value(bucket=bucket, history=1, ttl=TTL_S)
        return cls(kv)

    @staticmethod
    def key(generation_id: str) -> str:
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in generation_id)

    async def load(self, generation_id: str) -> RunState | None:
        try:
            entry = await self.kv.get(self.key(generation_id))
        except nats.js.errors.KeyNotFoundError:
            return None
        if not entry.value:
            return None
        return RunState(**orjson.loads(entry.value))

    async def save(self, state: RunState) -> None:
        await self.kv.put(self.key(state.generation_id), orjson.dumps(asdict(state)))
