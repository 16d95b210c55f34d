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
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from libs.bus import Bus
from libs.bus.acks import Outgoing, header_block, mux_for
from libs.bus.direct import Stored, allow_direct, last_in
from libs.bus.publish import outgoing
from libs.kv import kv_stream, open_bucket
from libs.schemas import MESSAGE_TYPES, BusMessage
from libs.settings import Settings
from services.pipeline.state import OutboxItem, RunState

BUCKET = "MMA_RUNS"
WRITE_TIMEOUT_S = 5.0  # nats-py's default for a KV write
WRITE_DELAY_S = 0.005  # a transition waits this long for the next before it is written, unless the run waits first
MAX_IN_FLIGHT = 2  # checkpoint writes of one run on the wire at once (the second only when the run waits)
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
        if generation_id.isalnum():  # a uuid's hex, as a rule
            return generation_id
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
        return self.loaded(await last_in(self.js, self.reads(generation_id)))

    def reads(self, generation_id: str) -> list[tuple[str, str]]:
        """(stream, subject) of the run's two keys, as `loaded` wants them read (`last_in`)."""
        key, stream = self.key(generation_id), kv_stream(self.bucket)
        return [(stream, self._subject(key)), (stream, self._subject(key + LATEST_SUFFIX))]

    def loaded(self, stored: Sequence[Stored | None]) -> RunState | None:
        """The state the two keys of `reads` hold."""
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
        _raise_failed(await (await self.start_put(generation_id, data, with_prep=with_prep)))

    async def start_put(self, generation_id: str, data: bytes, *, with_prep: bool = False) -> asyncio.Future[list[Any]]:
        """`put` in two parts: returns once the write is on its way, behind every write sent before it on
        this connection (so two writes of one key land in the order sent), with a future of its ack."""
        key = self.key(generation_id)
        return await self.mux.send((Outgoing(self._subject(key if with_prep else key + LATEST_SUFFIX), b"", data),),
                                   WRITE_TIMEOUT_S)

    def _subject(self, key: str) -> str:
        return f"$KV.{self.bucket}.{key}"

    async def _write(self, *items: Outgoing) -> None:
        """KV writes in one batch (what `kv.put` / `kv.purge` send), raising the first failure."""
        _raise_failed(await self.mux.publish(items, WRITE_TIMEOUT_S))

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


@dataclass(slots=True)
class _Put:
    """A checkpoint on the wire, its ack not yet read, with the messages it holds for publishing."""

    acked: asyncio.Future[list[Any]]
    messages: list[BusMessage]
    wire: list[Outgoing]
    version: int
    with_prep: bool
    terminal: bool


class Outbox:
    """A run's transitions, each checkpointed with its messages and then published (the outbox pattern),
    as a group commit whose publishes overlap the next checkpoint.

    `queue` records a transition (the state encoded at once, with every message decided and not yet
    acked as its outbox) and returns; one writer per run writes the latest queued state, then sends
    every message queued with it (pipelined) WITHOUT waiting for their acks, and takes whatever was
    queued meanwhile as its next write. So a message is never published before a checkpoint holding it
    is written, and a checkpoint replacing it still holds every message whose ack is not in yet (a
    crash after it republishes them: same msg ids, deduplicated). A batch is sent only once the
    previous batch's acks are in (normally during the checkpoint write before it), so a run's messages
    reach the stream in the order they were decided, even across a NATS restart; transitions decided
    while a write is in flight share the next one. The run waits for one round trip per write
    (`durable`: the checkpoint), or for everything (`flush`); once a terminal state is published,
    the run is forgotten.

    When the run waits (`durable`, `flush`: its end, as a rule) while a write is in flight, what it
    waits for is written at once behind it (`MAX_IN_FLIGHT`): the two writes go out on one connection
    to one stream, so they land in the order sent, and their acks are read in that order; the wait is
    one round trip instead of two. Behind the first checkpoint (the one with the prep, under the run's
    key) the second is written there too, with the prep: were the first refused and the second kept,
    the key would still hold a whole state.

    A step's output is uploaded while the run goes on (`StepContext.store_output`): the runner `hold`s
    the upload, and the next checkpoint (the one recording the output) is written only once it is done.

    An idle writer starts `WRITE_DELAY_S` after a transition is queued, or at once when the run waits
    for it (`durable`, `flush`): steps that take no time (the prep, a step without a provider call, the
    prediction's creation) share one write instead of one each.
    """

    def __init__(self, store: CheckpointStore, bus: Bus) -> None:
        self.store = store
        self.bus = bus
        self.queued: list[BusMessage] = []  # decided, their checkpoint not yet written
        self.wire: list[Outgoing] = []  # the queued messages encoded once: published as they are
        self.open: list[OutboxItem] = []  # every message decided whose ack is not in yet, as the checkpoint holds it
        self.encoded = b""  # the latest queued state
        self.with_prep = False  # a queued state goes under the run's key, with the prep
        self.terminal = False
        self.version = 0  # transitions queued so far
        self.written = 0  # transitions whose checkpoint is written
        self.writer: asyncio.Task[None] | None = None
        self.in_flight: list[_Put] = []  # checkpoints written, oldest first, their acks not yet read (at most 2)
        self.urgent = False  # the run waits: what is queued goes out without waiting for the write in flight
        self.nudge: asyncio.Future[None] | None = None  # wakes a writer waiting for an ack when `urgent` is set
        self.sending: asyncio.Task[None] | None = None  # the last batch sent, until its acks are in
        self.progress: asyncio.Future[None] | None = None  # resolved when `written` moves or the writer stops
        self.failed: BaseException | None = None
        self.state: RunState | None = None  # the run's state, for the writer (its id, its end)
        self.timer: asyncio.TimerHandle | None = None  # starts an idle writer
        self.at_end: Callable[[], Awaitable[None]] | None = None  # run with the forget, once the end is published
        self.held: list[asyncio.Future[Any]] = []  # what the next checkpoint must wait for (an output's upload)

    def hold(self, tasks: Sequence[asyncio.Future[Any]]) -> None:
        """The next checkpoint is written only once `tasks` are done; a failed one fails the outbox (raised
        by the run's next wait on it): a checkpoint never records an output that was not stored."""
        self.held.extend(tasks)

    def queue(self, state: RunState, messages: Sequence[BusMessage], *, with_prep: bool = False) -> None:
        wire = [outgoing(m) for m in messages]
        self.queued.extend(messages)
        self.wire.extend(wire)
        # the checkpoint embeds each message's published JSON as it is (orjson.Fragment: not parsed again)
        self.open.extend(OutboxItem(type=type(m).__name__, data=orjson.Fragment(w.payload))
                         for m, w in zip(messages, wire, strict=True))
        # while the first checkpoint is unacked, a later one may go out behind it: it goes to the same key
        self.with_prep = self.with_prep or with_prep or any(put.with_prep for put in self.in_flight)
        state.outbox = self.open
        self.encoded = self.store.encode(state, with_prep=self.with_prep)
        state.outbox = []  # written with the state; nothing of it needs keeping in memory
        self.terminal = state.terminal
        self.version += 1
        self.state = state
        if self.timer is None and self.failed is None and (self.writer is None or self.writer.done()):
            self.timer = asyncio.get_running_loop().call_later(WRITE_DELAY_S, self.kick)

    def kick(self, urgent: bool = False) -> None:
        """Start writing what is queued (an idle writer's delay is up, or the run waits for it: `urgent`)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.encoded or self.state is None or self.failed is not None:
            return
        if self.writer is None or self.writer.done():
            self.writer = asyncio.create_task(self._write(self.state))
        elif urgent:
            self.urgent = True
            if self.nudge is not None and not self.nudge.done():
                self.nudge.set_result(None)

    async def _write(self, state: RunState) -> None:
        try:
            while self.encoded or self.in_flight:
                may_add = len(self.in_flight) < MAX_IN_FLIGHT
                if self.encoded and (not self.in_flight or (self.urgent and may_add)):
                    await self._issue(state)
                elif may_add and not self.in_flight[0].acked.done():  # the ack, or the run waiting meanwhile
                    await self._acked_or_urgent(self.in_flight[0].acked)
                else:
                    await self._complete(state)
        except asyncio.CancelledError as exc:
            self.failed = exc
            raise
        except Exception as exc:  # raised by `flush`, to the run
            self.failed = self.failed or exc
        finally:
            for put in self.in_flight:
                put.acked.cancel()  # no one reads these acks now: their replies are forgotten
            self.in_flight.clear()
            self._moved()

    async def _issue(self, state: RunState) -> None:
        """Write the latest queued state (once the uploads it records are stored); its ack is read later."""
        encoded, messages, wire, version = self.encoded, self.queued, self.wire, self.version
        with_prep, terminal = self.with_prep, self.terminal
        self.encoded, self.queued, self.wire, self.with_prep, self.urgent = b"", [], [], False, False
        if self.held:
            held, self.held = self.held, []
            _raise_failed(await asyncio.gather(*held, return_exceptions=True))
        acked = await self.store.start_put(state.generation_id, encoded, with_prep=with_prep)
        self.in_flight.append(_Put(acked, messages, wire, version, with_prep, terminal))

    async def _acked_or_urgent(self, acked: asyncio.Future[list[Any]]) -> None:
        self.nudge = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait((acked, self.nudge), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.nudge = None

    async def _complete(self, state: RunState) -> None:
        """The oldest write's ack (and the next one's, when it is in too); then their messages are sent."""
        put = self.in_flight.pop(0)
        _raise_failed(await put.acked)
        messages, wire = put.messages, put.wire
        while self.in_flight and _succeeded(self.in_flight[0].acked):
            put = self.in_flight.pop(0)
            messages, wire = messages + put.messages, wire + put.wire
        self.written = put.version
        self._moved()
        if self.sending is not None:
            await self.sending  # the previous batch's acks: in already, as a rule
        self.sending = asyncio.create_task(self._send(messages, wire))
        if put.terminal:  # the end is published: nothing of the run needs keeping
            await self.sending
            await asyncio.gather(self.store.forget(state), *([self.at_end()] if self.at_end else []))

    async def _send(self, messages: list[BusMessage], wire: list[Outgoing]) -> None:
        """Publish a batch; once its acks are in, its messages leave the outbox of later checkpoints."""
        try:
            await self.bus.publish_all(messages, wire)
        except BaseException as exc:
            self.failed = self.failed or exc
            raise
        del self.open[:len(messages)]  # the oldest open messages are this batch's: batches go out in order

    def _moved(self) -> None:
        if self.progress is not None and not self.progress.done():
            self.progress.set_result(None)
        self.progress = None

    async def durable(self) -> None:
        """Wait until every queued transition is checkpointed (not necessarily published); raise what failed."""
        target = self.version
        self.kick(urgent=True)
        while self.written < target and self.failed is None and self.writer is not None and not self.writer.done():
            if self.progress is None:
                self.progress = asyncio.get_running_loop().create_future()
            await self.progress
        if self.failed is not None:
            raise self.failed

    async def flush(self) -> None:
        """Wait until every queued transition is written and published; raise the first failure."""
        await self.settle()
        if self.failed is not None:
            raise self.failed

    async def settle(self) -> None:
        """Let the writes and sends in flight finish, whatever they end with (a run leaving on an error)."""
        self.kick(urgent=True)
        while True:
            pending = {t for t in (self.writer, self.sending) if t is not None and not t.done()}
            if not pending:
                break
            await asyncio.wait(pending)
        if self.sending is not None and self.sending.done() and not self.sending.cancelled():
            self.sending.exception()  # retrieved: `failed` holds it

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


def _raise_failed(results: Sequence[object]) -> None:
    """Raise the first failure among a batch's answers (or its uploads' results)."""
    for result in results:
        if isinstance(result, BaseException):
            raise result


def _succeeded(acked: asyncio.Future[list[Any]]) -> bool:
    """The write's ack is in, and is an ack."""
    return (acked.done() and not acked.cancelled()
            and not any(isinstance(result, BaseException) for result in acked.result()))
