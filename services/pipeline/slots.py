"""Per-customer concurrency: at most K generations of one pass id run at once, across pipelines.

A JetStream KV bucket holds the slots: key `s.<pass>.<i>` (i < K), value = the
generation id. `kv.create` is atomic on the server, so two pipeline processes can
never both take slot i. The slots a process holds are refreshed every third of the
bucket TTL by ONE loop per process (a compare-and-set on the revision last written:
one round trip, no task per run); a crashed run's slot simply expires (`slot_ttl_s`).

Waiting keeps its order: key `w.<pass>` is the customer's waiting list {generation:
[JOBS stream seq, last seen]}, updated with compare-and-set on the revision. Only the
live waiter with the lowest stream seq may take a free slot; a waiter that stopped
polling (crash, job deleted) drops out after `STALE_AFTER_POLLS` polls.

A waiting job waits IN PROCESS (bounded poll, never a nak), so waiting never burns
its max deliveries: the bus keeps sending in-progress acks while the handler runs.
Two jobs that join an empty list in the same instant may take free slots in either
order; among jobs already waiting, the order is the stream's.

The common case costs two round trips: the waiting list and every slot are read at
once and, with no live waiter ahead, a free slot is taken by compare-and-set on the
revision just read, without joining the list. Only a job that must wait joins it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import nats.js.errors
import orjson
import stamina
import structlog
from nats.js import JetStreamContext
from nats.js.kv import KeyValue

from libs.bus.acks import Outgoing, header_block, mux_for
from libs.bus.direct import Stored, allow_direct, last_of
from libs.kv import kv_stream, open_bucket
from libs.settings import Settings
from libs.transient import NATS_AWAY
from libs.waiting import BUCKET, pass_key, stale_after_s

log = structlog.get_logger("pipeline")

WRONG_LAST_SEQUENCE = (10071, 10164)  # JetStream: the subject's last sequence is not the expected one


REFRESH_AT_ONCE = 1024  # slot refreshes written in one batch
REFRESH_TIMEOUT_S = 5.0
EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"  # what `kv.update(last=...)` sends
REFRESH_ERRORS: tuple[type[BaseException], ...] = (nats.js.errors.NotFoundError, nats.js.errors.APIError, *NATS_AWAY)
WRITE_TIMEOUT_S = 5.0  # nats-py's default for a KV write
KV_OPERATION = "KV-Operation"


@dataclass(eq=False)
class Slot:
    """A held slot (or none when the limit is off); `release` is idempotent."""

    slots: CustomerSlots | None = None
    key: str | None = None
    revision: int = 0
    value: bytes = b""  # the generation id, as the slot holds it
    waited: bool = False  # not taken at once: the run went through the waiting list

    async def release(self, generation_id: str) -> None:
        if self.slots is not None and self.key is not None:
            key, self.key = self.key, None
            self.slots.held.pop(key, None)
            await self.slots.free(key, generation_id, self.revision)


class CustomerSlots:
    def __init__(self, kv: KeyValue, settings: Settings, js: JetStreamContext) -> None:
        self.kv = kv
        self.js = js
        self.limit = settings.max_running_per_customer
        self.poll_s = max(0.01, settings.slot_poll_interval_s)
        self.ttl_s = settings.slot_ttl_s
        self.stale_s = stale_after_s(settings)
        self.held: dict[str, Slot] = {}  # key -> the slot this process holds, refreshed by `_refresh_loop`
        self.refresher: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, js: JetStreamContext, settings: Settings) -> CustomerSlots:
        kv = await open_bucket(js, BUCKET, max_bytes=settings.slots_max_bytes, ttl_s=settings.slot_ttl_s,
                               replicas=settings.stream_replicas)
        await allow_direct(js, kv_stream(BUCKET))  # a start reads the waiting list and the slots in one batch
        return cls(kv, settings, js)

    # ------------------------------------------------------------------ slots

    def reads(self, pass_id: str) -> list[tuple[str, str]]:
        """(stream, subject) of the customer's waiting list and slots, as `acquire(seen=...)` wants them read
        (the run reads them with its checkpoint, in one batch); none without a limit."""
        if self.limit <= 0:
            return []
        stream, pk = kv_stream(BUCKET), pass_key(pass_id)
        return [(stream, f"$KV.{BUCKET}.{key}") for key in self._keys(pk)]

    def _keys(self, pk: str) -> list[str]:
        return [f"w.{pk}", *(f"s.{pk}.{i}" for i in range(self.limit))]

    async def acquire(self, generation_id: str, pass_id: str, place: Callable[[], Awaitable[int]],
                      seen: Sequence[Stored | None] | None = None) -> Slot:
        """Wait (in order) until one of the customer's K slots is ours; cancellable at any await.

        `place` gives the job's place in line (its JOBS stream seq); it is asked only when the job
        has to wait. `seen`: the keys of `reads`, read a moment ago (else they are read here).
        """
        if self.limit <= 0:
            return Slot()
        pk = pass_key(pass_id)
        taken, listed = await self._take_at_once(pk, generation_id, seen)
        if taken is not None:
            if listed:  # a redelivered job that was waiting before leaves the list
                await asyncio.shield(self._leave(pk, generation_id))
            return self._hold(taken, generation_id)
        seq = await place()
        waited = False
        try:
            while True:
                held = await self._held(pk, generation_id)
                if held is not None:
                    return self._hold(held, generation_id, waited=True)
                await self._join(pk, generation_id, seq)
                if await self._is_first(pk, generation_id):
                    taken = await self._take(pk, generation_id)
                    if taken is not None:
                        if waited:
                            log.info("pipeline.slot_acquired_after_wait", generation_id=generation_id)
                        return self._hold(taken, generation_id, waited=True)
                if not waited:
                    log.info("pipeline.slot_wait", generation_id=generation_id, limit=self.limit, stream_seq=seq)
                    waited = True
                await asyncio.sleep(self.poll_s)
        finally:
            await asyncio.shield(self._leave(pk, generation_id))

    async def _take_at_once(self, pk: str, generation_id: str,
                            seen: Sequence[Stored | None] | None = None) -> tuple[tuple[str, int] | None, bool]:
        """(the slot, whether this generation is on the waiting list): one read of the list and every
        slot together (or what `seen` holds of them), then a compare-and-set on a slot seen free, unless a
        live waiter is ahead. A slot this generation already holds (a redelivered run) is taken back."""
        keys = self._keys(pk)
        entries = self._values(seen) if seen is not None and len(seen) == len(keys) else await self._entries(keys)
        (waiting, _), *slots = entries
        listed: dict[str, list[float]] = orjson.loads(waiting) if waiting else {}
        is_listed = generation_id in listed
        mine = generation_id.encode()
        for i, (value, revision) in enumerate(slots):
            if value == mine:
                return (f"s.{pk}.{i}", revision), is_listed
        if not self._first_in(listed, generation_id):
            return None, is_listed
        for i, (value, revision) in enumerate(slots):
            if value is not None:
                continue
            key = f"s.{pk}.{i}"
            written = await self._write(key, {EXPECTED_LAST: str(revision)}, mine)
            if written is not None:
                return (key, written), is_listed
        return None, is_listed

    async def _write(self, key: str, headers: dict[str, str], value: bytes) -> int | None:
        """One compare-and-set write of a key (what `kv.update` / `kv.delete(last=...)` send, through the
        connection's mux): its revision, or None when the key changed since the revision expected."""
        result = (await mux_for(self.js._nc).publish((Outgoing(f"$KV.{BUCKET}.{key}", header_block(headers), value),),
                                                     WRITE_TIMEOUT_S))[0]
        if isinstance(result, nats.js.errors.APIError) and result.err_code in WRONG_LAST_SEQUENCE:
            return None
        if isinstance(result, BaseException):
            raise result
        return int(result.seq)

    async def _entries(self, keys: list[str]) -> list[tuple[bytes | None, int]]:
        """(value, revision) of each key, read in one direct-get batch; (None, revision of its delete
        marker, or 0) for a key without a value, so a compare-and-set on that revision creates it in one
        round trip."""
        return self._values(await last_of(self.js, kv_stream(BUCKET), [f"$KV.{BUCKET}.{key}" for key in keys]))

    @staticmethod
    def _values(stored: Sequence[Stored | None]) -> list[tuple[bytes | None, int]]:
        return [(None, 0) if s is None else (None if s.deleted else s.data or None, s.seq) for s in stored]

    def _hold(self, taken: tuple[str, int], generation_id: str, waited: bool = False) -> Slot:
        slot = Slot(self, taken[0], taken[1], generation_id.encode(), waited=waited)
        self.held[taken[0]] = slot
        if self.refresher is None or self.refresher.done():
            self.refresher = asyncio.create_task(self._refresh_loop(), name="slots-refresh")
        return slot

    def drop(self, slot: Slot) -> None:
        """Stop refreshing `slot` without freeing it (what a crashed process leaves: it expires)."""
        if slot.key is not None:
            self.held.pop(slot.key, None)

    async def _held(self, pk: str, generation_id: str) -> tuple[str, int] | None:
        """A slot this generation already holds (a redelivered run resuming)."""
        for i in range(self.limit):
            key = f"s.{pk}.{i}"
            with contextlib.suppress(nats.js.errors.NotFoundError):
                entry = await self.kv.get(key)
                if entry.value and entry.value.decode() == generation_id:
                    return key, int(entry.revision or 0)
        return None

    async def _take(self, pk: str, generation_id: str) -> tuple[str, int] | None:
        for i in range(self.limit):
            key = f"s.{pk}.{i}"
            try:
                revision = await self.kv.create(key, generation_id.encode())
            except nats.js.errors.KeyWrongLastSequenceError:
                continue
            return key, int(revision)
        return None

    async def _refresh_loop(self) -> None:
        """Every third of the bucket TTL, rewrite every slot this process holds, until it holds none."""
        while self.held:
            await asyncio.sleep(self.ttl_s / 3)
            slots = list(self.held.values())
            for i in range(0, len(slots), REFRESH_AT_ONCE):
                await self._refresh_batch(slots[i:i + REFRESH_AT_ONCE])

    async def _refresh_batch(self, slots: list[Slot]) -> None:
        """Rewrite each slot on the revision last written, all in one pipelined batch (one buffer, acks
        awaited together); a slot whose revision changed since (a refresh whose answer was lost) goes
        through `_refresh`, which reads it first. Slots released meanwhile are left alone."""
        live = [(slot, slot.key) for slot in slots if slot.key is not None and self.held.get(slot.key) is slot]
        if not live:
            return
        items = [Outgoing(f"$KV.{BUCKET}.{key}", header_block({EXPECTED_LAST: str(slot.revision)}), slot.value)
                 for slot, key in live]
        try:
            results = await mux_for(self.js._nc).publish(items, REFRESH_TIMEOUT_S)
        except REFRESH_ERRORS as exc:
            log.warning("pipeline.slot_refresh_failed", count=len(live), error=repr(exc))
            return
        for (slot, key), result in zip(live, results, strict=True):
            if not isinstance(result, BaseException):
                if slot.key == key:
                    slot.revision = int(result.seq)
            elif isinstance(result, nats.js.errors.APIError) and result.err_code in WRONG_LAST_SEQUENCE:
                await self._refresh(slot)
            else:
                log.warning("pipeline.slot_refresh_failed", key=key, error=repr(result))

    async def _refresh(self, slot: Slot) -> None:
        """A slot whose revision changed since it was last written: read, and rewritten only while it still
        names this generation."""
        key = slot.key
        if key is None or self.held.get(key) is not slot:
            return
        try:
            entry = await self.kv.get(key)
            if entry.value != slot.value:
                log.warning("pipeline.slot_lost", key=key)
                return
            revision = await self.kv.update(key, slot.value, last=entry.revision)
            if slot.key == key:
                slot.revision = int(revision)
        except REFRESH_ERRORS as exc:
            log.warning("pipeline.slot_refresh_failed", key=key, error=repr(exc))

    async def free(self, key: str, generation_id: str, revision: int) -> None:
        """Delete the slot only while it still names this generation (never another run's): a delete
        expecting the revision we last wrote, or, when the slot changed since, a look at it first."""
        with contextlib.suppress(nats.js.errors.NotFoundError, nats.js.errors.APIError):
            expected = {EXPECTED_LAST: str(revision)} if revision > 0 else {}
            if await self._write(key, {KV_OPERATION: "DEL", **expected}, b"") is not None:
                return
            entry = await self.kv.get(key)
            if entry.value and entry.value.decode() == generation_id:
                await self.kv.delete(key, last=entry.revision)

    # ------------------------------------------------------------------ waiting list

    async def _cas(self, key: str, change: dict[str, list[float]] | None, drop: str | None = None) -> None:
        """Merge `change` into (or drop `drop` from) the list at `key`; a lost race (the list changed since
        it was read) reads it again at once, as often as it takes."""
        async for attempt in stamina.retry_context(on=nats.js.errors.KeyWrongLastSequenceError, attempts=None,
                                                   timeout=None, wait_initial=0.0, wait_max=0.0, wait_jitter=0.0):
            with attempt:
                await self._cas_once(key, change, drop)

    async def _cas_once(self, key: str, change: dict[str, list[float]] | None, drop: str | None) -> None:
        """One read and compare-and-set of the list; KeyWrongLastSequenceError when another writer came first."""
        try:
            entry = await self.kv.get(key)
            current: dict[str, list[float]] = orjson.loads(entry.value) if entry.value else {}
            revision = int(entry.revision or 0)
        except nats.js.errors.NotFoundError:
            current, revision = {}, 0
        if drop is not None and drop not in current:
            return
        updated = {k: v for k, v in current.items() if k != drop}
        if change:
            updated.update(change)
        if revision:
            await self.kv.update(key, orjson.dumps(updated), last=revision)
        else:
            await self.kv.create(key, orjson.dumps(updated))

    async def _join(self, pk: str, generation_id: str, seq: int) -> None:
        await self._cas(f"w.{pk}", {generation_id: [float(seq), time.time()]})

    async def _leave(self, pk: str, generation_id: str) -> None:
        with contextlib.suppress(nats.js.errors.Error, OSError):
            await self._cas(f"w.{pk}", None, drop=generation_id)

    async def _is_first(self, pk: str, generation_id: str) -> bool:
        try:
            entry = await self.kv.get(f"w.{pk}")
        except nats.js.errors.NotFoundError:
            return True
        return self._first_in(orjson.loads(entry.value) if entry.value else {}, generation_id)

    def _first_in(self, waiting: dict[str, list[float]], generation_id: str) -> bool:
        """No live waiter other than this generation has a lower place in line (stale ones are skipped)."""
        now = time.time()
        live = [(seq, gen) for gen, (seq, seen) in waiting.items() if now - seen < self.stale_s or gen == generation_id]
        return not live or min(live)[1] == generation_id
