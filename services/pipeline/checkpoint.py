"""Run checkpoints in a JetStream KV bucket: what a redelivered job needs to resume.

A step's messages are written to the checkpoint (the outbox) BEFORE they are
published, so a crash between the two republishes exactly the same messages (same
msg ids, same content) instead of re-running the step. A pending prediction id is
checkpointed before the wait, so a resume reuses it instead of creating another.

The run's first checkpoint (written once, when it is prepared) holds its `prep`: config
snapshot, taste, parent, plan, several KB that no step changes. Every later transition
goes to a second key without it, so a step writes a small value.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import nats.js.errors
import orjson
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

BUCKET = "MMA_RUNS"
TTL_S = 7 * 86400
LATEST_SUFFIX = ".latest"


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
    # [{type, data}] of the last transition, after the earlier messages whose acks were not in yet
    outbox: list[dict[str, Any]] = field(default_factory=list)
    terminal: bool = False
    provider_started: bool = False  # a generator prediction was created (it may have cost us money)


class CheckpointStore:
    """Two KV keys per generation id: `<key>` (the first checkpoint, with the prep) and `<key>.latest`
    (every later transition, without it); values are JSON."""

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
        """The first checkpoint's key; it never contains a dot, so `<key>.latest` cannot name another run's."""
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in generation_id)

    async def _value(self, key: str) -> dict[str, Any] | None:
        try:
            entry = await self.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return None
        return orjson.loads(entry.value) if entry.value else None

    async def load(self, generation_id: str) -> RunState | None:
        """The latest transition with the prep of the first checkpoint (both keys read together)."""
        key = self.key(generation_id)
        first, latest = await asyncio.gather(self._value(key), self._value(key + LATEST_SUFFIX))
        if latest is None:
            return RunState(**first) if first is not None else None
        return RunState(**latest, prep=first.get("prep", {}) if first is not None else {})

    async def save(self, state: RunState, *, with_prep: bool = False) -> None:
        """`with_prep`: the run's first checkpoint, prep included (written once); otherwise the latest
        transition, without the prep."""
        if with_prep:
            await self.kv.put(self.key(state.generation_id), orjson.dumps(vars(state)))
            return
        latest = {name: value for name, value in vars(state).items() if name != "prep"}
        await self.kv.put(self.key(state.generation_id) + LATEST_SUFFIX, orjson.dumps(latest))
