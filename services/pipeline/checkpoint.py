"""Run checkpoints in a JetStream KV bucket, and the outbox that rides in them.

A transition's messages are written to the checkpoint (the outbox) BEFORE they are
published, so a crash between the two republishes exactly the same messages (same
msg ids, same content) instead of re-running the step. The outbox holds the last
transition only: its acks are awaited before the next transition starts. A pending
prediction id is checkpointed before the wait, so a resume reuses it instead of
creating another.

The run's first checkpoint (written once, when it is prepared) holds its `prep`: config
snapshot, taste, parent, plan, several KB that no step changes. Every later transition
goes to a second key without it, so a step writes a small value.

Once the run's end is published, `forget` clears both keys: the first is purged and the
second replaced by a small `terminal` marker; the purge and the marker carry a
per-message TTL (`MMA_CHECKPOINT_FINAL_TTL_S`), so nothing of a finished run stays in the
bucket. Until then the marker is what a late redelivery of the job (an ack lost after
the end) finds instead of starting the run again. The bucket's own limits
(`MMA_CHECKPOINTS_MAX_BYTES`, `MMA_CHECKPOINTS_MAX_AGE_S`) bound whatever a crash leaves
behind.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import orjson
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from libs.bus import Bus
from libs.bus.acks import Outgoing, header_block, mux_for
from libs.bus.direct import Stored, allow_direct, last_of
from libs.bus.publish import outgoing
from libs.kv import kv_stream, open_bucket
from libs.schemas import MESSAGE_TYPES, BusMessage
from libs.settings import Settings
from services.pipeline.state import OutboxItem, RunState

BUCKET = "MMA_RUNS"
WRITE_TIMEOUT_S = 5.0  # nats-py's default for a KV write
LATEST_SUFFIX = ".latest"


class CheckpointStore:
    """Two KV keys per generation id: `<key>` (the first checkpoint, with the prep) and `<key>.latest`
    (every later transition, without it); values are JSON."""

    def __init__(self, kv: KeyValue, js: JetStreamContext, bucket: str = BUCKET, final_ttl_s: float = 600.0) -> None:
        self.kv = kv
        self.js = js
        self.bucket = bucket
        self.final_ttl_s = final_ttl_s
        self.mux = mux_for(js._nc)  # KV writes are JetStream publishes: pipelined, acks awaited together

    @classmethod
    async def open(cls, js: JetStreamContext, settings: Settings, bucket: str = BUCKET) -> CheckpointStore:
        kv = await open_bucket(js, bucket, max_bytes=settings.checkpoints_max_bytes,
                               ttl_s=settings.checkpoints_max_age_s, replicas=settings.stream_replicas)
        await allow_direct(js, kv_stream(bucket))  # `load` reads both keys in one direct-get batch
        return cls(kv, js, bucket, settings.checkpoint_final_ttl_s)

    @staticmethod
    def key(generation_id: str) -> str:
        """The first checkpoint's key; it never contains a dot, so `<key>.latest` cannot name another run's."""
        return "".join(c if c.isalnum() or c in "-_" else "_" for c in generation_id)

    @staticmethod
    def _json(stored: Stored | None) -> dict[str, Any] | None:
        """A key's JSON as stored (our own writing, read back as it is: see services/pipeline/state.py);
        None for no value (never written, purged, deleted or expired)."""
        if stored is None or stored.deleted or not stored.data:
            return None
        parsed: dict[str, Any] = orjson.loads(stored.data)
        return parsed

    async def load(self, generation_id: str) -> RunState | None:
        """The latest transition with the prep of the first checkpoint (both keys read in one batch)."""
        key = self.key(generation_id)
        subjects = [self._subject(key), self._subject(key + LATEST_SUFFIX)]
        stored = await last_of(self.js, kv_stream(self.bucket), subjects)
        first, latest = self._json(stored[0]), self._json(stored[1])
        if latest is None:
            return RunState(**first) if first is not None else None
        return RunState(**latest, prep=first.get("prep", {}) if first is not None else {})

    @staticmethod
    def encode(state: RunState, *, with_prep: bool = False) -> bytes:
        """The state as stored: whole with the prep (the first checkpoint), else without it."""
        if with_prep:
            return orjson.dumps(state)
        return orjson.dumps({name: value for name, value in vars(state).items() if name != "prep"})

    async def put(self, generation_id: str, data: bytes, *, with_prep: bool = False) -> None:
        """Write an encoded state: under the run's key with the prep, else under `<key>.latest`."""
        key = self.key(generation_id)
        await self._write(Outgoing(self._subject(key if with_prep else key + LATEST_SUFFIX), b"", data))

    def _subject(self, key: str) -> str:
        return f"$KV.{self.bucket}.{key}"

    async def _write(self, *items: Outgoing) -> None:
        """KV writes in one batch (what `kv.put` / `kv.purge` send), raising the first failure."""
        for result in await self.mux.publish(items, WRITE_TIMEOUT_S):
            if isinstance(result, BaseException):
                raise result

    async def save(self, state: RunState, *, with_prep: bool = False) -> None:
        await self.put(state.generation_id, self.encode(state, with_prep=with_prep), with_prep=with_prep)

    async def forget(self, state: RunState) -> None:
        """After the run's end is published: purge the prep and leave only a small terminal marker,
        both expiring after `final_ttl_s` (per-message TTL), so no finished run stays in the bucket."""
        key = self.key(state.generation_id)
        marker = {"generation_id": state.generation_id, "terminal": True, "status": state.status,
                  "step_count": state.step_count, "provider_started": state.provider_started}
        ttl = str(int(max(1.0, self.final_ttl_s)))
        await self._write(
            Outgoing(self._subject(key), header_block({"KV-Operation": "PURGE", "Nats-Rollup": "sub", "Nats-TTL": ttl}),
                     b""),
            Outgoing(self._subject(key + LATEST_SUFFIX), header_block({"Nats-TTL": ttl}), orjson.dumps(marker)))


class Outbox:
    """A run's transitions, each checkpointed with its messages and then published (the outbox pattern),
    as a group commit.

    `queue` records a transition (the state encoded at once, its messages appended to the outbox) and
    returns; one writer per run writes the latest queued state, then publishes every queued message
    (pipelined), then takes whatever was queued meanwhile as its next write. So a message is never
    published before a checkpoint holding it is written, a run's messages reach the stream in the order
    they were decided (a write starts only once the previous one's acks are in: with acks outstanding
    across transitions, a publish lost in a NATS restart was retried after later ones, even after
    `done`), and transitions decided while a write is in flight share the next one. `flush` waits for
    everything queued and raises what failed; after a terminal state is published, the run is forgotten.
    """

    def __init__(self, store: CheckpointStore, bus: Bus) -> None:
        self.store = store
        self.bus = bus
        self.queued: list[BusMessage] = []
        self.wire: list[Outgoing] = []  # the queued messages encoded once: published as they are
        self.items: list[OutboxItem] = []  # the same JSON, as the checkpoint holds it
        self.encoded = b""  # the latest queued state
        self.with_prep = False  # a queued state is the run's first checkpoint
        self.terminal = False
        self.writer: asyncio.Task[None] | None = None
        self.failed: BaseException | None = None

    def queue(self, state: RunState, messages: Sequence[BusMessage], *, with_prep: bool = False) -> None:
        wire = [outgoing(m) for m in messages]
        self.queued.extend(messages)
        self.wire.extend(wire)
        # the checkpoint embeds each message's published JSON as it is (orjson.Fragment: not parsed again)
        self.items.extend(OutboxItem(type=type(m).__name__, data=orjson.Fragment(w.payload))
                          for m, w in zip(messages, wire, strict=True))
        self.with_prep = self.with_prep or with_prep
        state.outbox = self.items
        self.encoded = self.store.encode(state, with_prep=self.with_prep)
        state.outbox = []  # written with the state; nothing of it needs keeping in memory
        self.terminal = state.terminal
        if self.failed is None and (self.writer is None or self.writer.done()):
            self.writer = asyncio.create_task(self._write(state))

    async def _write(self, state: RunState) -> None:
        try:
            while self.encoded:
                encoded, messages, wire = self.encoded, self.queued, self.wire
                with_prep, terminal = self.with_prep, self.terminal
                self.encoded, self.queued, self.wire, self.items, self.with_prep = b"", [], [], [], False
                await self.store.put(state.generation_id, encoded, with_prep=with_prep)
                await self.bus.publish_all(messages, wire)
                if terminal:  # the end is published: nothing of the run needs keeping
                    await self.store.forget(state)
        except asyncio.CancelledError as exc:
            self.failed = exc
            raise
        except Exception as exc:  # raised by `flush`, to the run
            self.failed = exc

    async def flush(self) -> None:
        """Wait until every queued transition is written and published; raise the first failure."""
        while self.writer is not None and not self.writer.done():
            await asyncio.wait({self.writer})
        if self.failed is not None:
            raise self.failed

    async def settle(self) -> None:
        """Let a write in flight finish, whatever it ends with (a run leaving on an error)."""
        while self.writer is not None and not self.writer.done():
            await asyncio.wait({self.writer})

    async def commit(self, state: RunState, messages: Sequence[BusMessage], *, with_prep: bool = False) -> None:
        """Queue a transition and wait until it (and everything before it) is published."""
        self.queue(state, messages, with_prep=with_prep)
        await self.flush()

    async def replay(self, state: RunState) -> None:
        """On a resume: publish the stored outbox again, a crash may have come between its checkpoint and
        its publish; a terminal run whose end was published but not yet forgotten is forgotten now."""
        if not state.outbox:
            return
        await self.bus.publish_all([MESSAGE_TYPES[item["type"]].model_validate(item["data"])
                                    for item in state.outbox])
        if state.terminal:
            await self.store.forget(state)
