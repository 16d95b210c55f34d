"""Run checkpoints in a JetStream KV bucket: what a redelivered job needs to resume.

A step's messages are written to the checkpoint (the outbox) BEFORE they are
published, so a crash between the two republishes exactly the same messages (same
msg ids, same content) instead of re-running the step. A pending prediction id is
checkpointed before the wait, so a resume reuses it instead of creating another.

The run's first checkpoint (written once, when it is prepared) holds its `prep`: config
snapshot, taste, parent, plan, several KB that no step changes. Every later transition
goes to a second key without it, so a step writes a small value.

Once the run's end is published, `forget` removes both: the first key is purged and the
second replaced by a small `terminal` marker, and both the purge and the marker carry a
per-message TTL (`MMA_CHECKPOINT_FINAL_TTL_S`), so nothing of a finished run stays in the
bucket. The marker is what a late redelivery of the job (an ack lost after the end) finds
instead of starting the run again. The bucket's own limits (`MMA_CHECKPOINTS_MAX_BYTES`,
`MMA_CHECKPOINTS_MAX_AGE_S`) bound whatever a crash leaves behind.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import nats.js.errors
import orjson
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from libs.kv import open_bucket
from libs.settings import Settings

BUCKET = "MMA_RUNS"
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

    def __init__(self, kv: KeyValue, js: JetStreamContext, bucket: str = BUCKET, final_ttl_s: float = 600.0) -> None:
        self.kv = kv
        self.js = js
        self.bucket = bucket
        self.final_ttl_s = final_ttl_s

    @classmethod
    async def open(cls, js: JetStreamContext, settings: Settings, bucket: str = BUCKET) -> CheckpointStore:
        kv = await open_bucket(js, bucket, max_bytes=settings.checkpoints_max_bytes,
                               ttl_s=settings.checkpoints_max_age_s, replicas=settings.stream_replicas)
        return cls(kv, js, bucket, settings.checkpoint_final_ttl_s)

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

    async def forget(self, state: RunState) -> None:
        """After the run's end is published: purge the prep and leave only a small terminal marker,
        both expiring after `final_ttl_s` (per-message TTL), so no finished run stays in the bucket."""
        key = self.key(state.generation_id)
        marker = {"generation_id": state.generation_id, "terminal": True, "status": state.status,
                  "step_count": state.step_count, "provider_started": state.provider_started}
        ttl = max(1.0, self.final_ttl_s)
        await asyncio.gather(self.kv.purge(key, msg_ttl=ttl),
                             self.js.publish(f"$KV.{self.bucket}.{key}{LATEST_SUFFIX}", orjson.dumps(marker),
                                             msg_ttl=ttl))
