"""SSE fan-out: one JetStream subscription per gateway process, shared by every SSE stream.

Each `/mma/stream` used to open its own ordered consumer on its generation's subject, so
NATS sent one copy of every line per stream and the gateway handled one flow per stream
(docs/bench.md). Now the gateway keeps one ordered consumer on `mma.evt.>` that starts at
new messages (it carries stream sequences in its metadata) and puts each message in the
`Watch` of every stream watching its generation: a list and one waiter, so a stream wakes
once for whatever arrived since it last wrote (one socket write per batch, not per line).

A stream (`Fanout.open`) registers its watch FIRST, then replays what is stored after
`after_seq` with ONE batched direct get (`$JS.API.DIRECT.GET`, `next_by_subj` + `batch`:
the server streams every stored message of the generation, then an end-of-batch status).
The request carries `min_last_seq` = the newest sequence the shared subscription had
handed over when the watch registered, so a replica that has not applied that far does
not answer (read-after-write on a replicated stream). Anything stored later reaches the
shared subscription after the registration, so it is in the watch; the watch then yields
only sequences past the last one replayed. Together: from `after_seq`+1 on, every
message exactly once, in stream order - what `Bus.follow` yields, without a consumer
each, in one round trip.

Most streams open right after their create, on a generation this gateway has watched from its
first event: the shared subscription keeps the raw events of recent generations whose first
event it saw (a generation's first event is always its decision, `accepted` or `rejected`),
and such a stream replays from memory, registering in the same step (no await between: no
gap, no repeat) - no round trip at all. The kept list is trusted once a get of the
generation's first decision (a literal subject: an index lookup, not a scan) shows it starts
where the list starts; a generation decided twice (a decision republished after the dedupe
window) or kept only in part falls back to the batched get.

Timers: a stream asks for a wake-up at `Watch.deadline` (a keepalive ping, a queue
update); one ticker per process wakes the due ones, instead of a timer per stream.

One `Fanout` per gateway process lives in `GatewayDeps.fanout`; `app.setup` starts it and
stops it after uvicorn has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, Callable

import nats.errors
import orjson
import structlog
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api
from pydantic import ValidationError

from libs.bus import Bus, decode
from libs.errors import InvalidMessageError, ServiceUnavailableError
from libs.schemas import EVENTS_ALL, MESSAGE_TYPES, TYPE_HEADER, BusMessage, Stream, generation_events
from services.gateway.adapters.watch import Delivery, Watch

__all__ = ["Delivery", "Fanout", "Watch"]

log = structlog.get_logger("gateway")

REPLAY_BATCH = 1000  # messages per direct-get batch (a generation says a few dozen)
REPLAY_TIMEOUT_S = 10.0
OPENS_AT_ONCE = 128  # replays in flight: a reconnect storm queues here instead of timing out in NATS
DECISION_KINDS = ("accepted", "rejected")
KEPT_GENERATIONS = 20_000  # recent generations whose raw events are kept for replays (oldest dropped first)
KEPT_EVENTS = 64  # events kept per generation; a longer one replays from the stream
KEPT_AFTER_END_S = 60.0  # how long an ended generation's events stay kept
END_KINDS = ("done", "failed", "rejected")


class _Kept:
    """The raw events (seq, type name, data) of one generation since its decision."""

    __slots__ = ("ended_at", "raws", "verified")

    def __init__(self) -> None:
        self.raws: list[tuple[int, str, bytes]] = []
        self.verified = False
        self.ended_at = math.inf


def _generation_of(subject: str) -> tuple[str, str] | None:
    """`mma.evt.<generation id>.<kind>...` -> (generation id, kind)."""
    parts = subject.split(".", 4)
    return (parts[2], parts[3]) if len(parts) >= 4 else None


def _kind_of(kept: _Kept) -> str:
    """The decision kind the kept list starts with."""
    model = MESSAGE_TYPES.get(kept.raws[0][1])
    return str(getattr(model, "kind", "accepted"))


def _decode_reply(raw: Msg) -> Delivery | None:
    """A direct-get reply carrying a stored message (None when undecodable)."""
    headers = raw.headers or {}
    model = MESSAGE_TYPES.get(headers.get(TYPE_HEADER, ""))
    seq = headers.get("Nats-Sequence")
    if model is None or not seq or not raw.data:
        return None
    try:
        return Delivery(int(seq), model.model_validate_json(raw.data))
    except (ValidationError, ValueError):
        return None


class _Replay:
    """The replies of one batched direct get."""

    __slots__ = ("count", "done", "items")

    def __init__(self) -> None:
        self.items: list[Delivery] = []
        self.count = 0  # messages received (decodable or not)
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()


class Fanout:
    """The shared live subscription of one bus connection, the watches by generation id, their ticker."""

    def __init__(self, bus: Bus, tick_s: float = 1.0) -> None:
        self._bus = bus
        self._watches: dict[str, list[Watch]] = {}
        self._sub: JetStreamContext.PushSubscription | None = None
        self._replies: Subscription | None = None
        self._inbox = ""
        self._replays: dict[str, _Replay] = {}
        self._tokens = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()
        self._opening = asyncio.Semaphore(OPENS_AT_ONCE)
        self.tick_s = tick_s
        self._kept: OrderedDict[str, _Kept] = OrderedDict()
        self._ending: deque[tuple[float, str, _Kept]] = deque()  # kept lists by when they end (oldest first)
        self.seen_seq = 0  # the newest stream sequence the shared subscription handed over
        self.delivered = 0
        self.on_decision_stored: Callable[[str], None] | None = None  # `Decisions.settled`

    @property
    def is_running(self) -> bool:
        return bool(self._tasks) and not self._tasks[0].done()

    @property
    def watching(self) -> int:
        return sum(len(watches) for watches in self._watches.values())

    async def start(self) -> None:
        """Subscribe once (idempotent); messages stored after this returns all reach the watches."""
        async with self._lock:
            if self.is_running:
                return
            nc = self._bus.nc
            self._inbox = nc.new_inbox()
            self._replies = await nc.subscribe(f"{self._inbox}.*", cb=self._on_reply)
            sub = await self._bus.js.subscribe(
                EVENTS_ALL, stream=Stream.EVENTS.value, ordered_consumer=True, cb=self._on_event,
                config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.NEW),
                inactive_threshold=5.0,  # a live subscription is never idle: heartbeats
            )
            self._sub = sub
            self._tasks = [asyncio.create_task(self._tick(), name="sse-ticker")]
            log.info("gateway.sse_fanout_started", subject=EVENTS_ALL)

    async def stop(self) -> None:
        async with self._lock:
            tasks, sub, replies = self._tasks, self._sub, self._replies
            self._tasks, self._sub, self._replies = [], None, None
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for subscription in (sub, replies):
            if subscription is not None:
                with contextlib.suppress(Exception):
                    await subscription.unsubscribe()

    async def _on_event(self, raw: Msg) -> None:
        """The subscription's callback: nats-py's task for it drains every message that one socket read
        brought in a single loop step (a `next_msg` loop took two loop turns per message, and behind
        10,000 streams' writes that capped the fan-out near 1,000 events/s, docs/bench.md)."""
        try:
            self._dispatch(raw)
        except Exception:  # keep the one subscription alive whatever one message did
            log.exception("gateway.sse_fanout_failed", subject=raw.subject)

    def _dispatch(self, raw: Msg) -> None:
        seq = raw.metadata.sequence.stream
        self.seen_seq = max(self.seen_seq, seq)
        found = _generation_of(raw.subject)
        if found is None:
            return
        generation_id, kind = found
        if kind in DECISION_KINDS and self.on_decision_stored is not None:
            self.on_decision_stored(generation_id)
        self._keep(generation_id, kind, seq, raw)
        watches = self._watches.get(generation_id)
        if not watches:
            return
        try:
            delivery = Delivery(seq, decode(raw))
        except InvalidMessageError:
            return
        for watch in watches:
            watch.put(delivery)
        self.delivered += len(watches)

    def _keep(self, generation_id: str, kind: str, seq: int, raw: Msg) -> None:
        kept = self._kept.get(generation_id)
        if kept is None:
            if kind not in DECISION_KINDS:
                return  # not watched from its first event
            kept = self._kept[generation_id] = _Kept()
            if len(self._kept) > KEPT_GENERATIONS:
                self._kept.popitem(last=False)
        if len(kept.raws) >= KEPT_EVENTS:
            del self._kept[generation_id]  # too long to keep: its readers replay from the stream
            return
        kept.raws.append((seq, (raw.headers or {}).get(TYPE_HEADER, ""), raw.data))
        if kind in END_KINDS and kept.ended_at == math.inf:
            kept.ended_at = time.monotonic() + KEPT_AFTER_END_S
            self._ending.append((kept.ended_at, generation_id, kept))

    def _forget_ended(self, now: float) -> None:
        """Drop the kept lists whose generation ended `KEPT_AFTER_END_S` ago (was a scan of all 20,000 a tick)."""
        ending = self._ending
        while ending and ending[0][0] <= now:
            _, generation_id, kept = ending.popleft()
            if self._kept.get(generation_id) is kept:
                del self._kept[generation_id]

    async def _verified(self, generation_id: str, kept: _Kept) -> bool:
        """Whether the kept list starts at the generation's first decision (one literal-subject get)."""
        first_seq = kept.raws[0][0]
        first = await self._bus.js.get_msg(Stream.EVENTS.value, seq=1, next=True, direct=True,
                                           subject=f"mma.evt.{generation_id}.{_kind_of(kept)}")
        return int(first.seq or 0) == first_seq

    def _from_kept(self, kept: _Kept, after_seq: int) -> list[Delivery]:
        out = []
        for seq, type_name, data in kept.raws:
            model = MESSAGE_TYPES.get(type_name)
            if seq <= after_seq or model is None:
                continue
            try:
                out.append(Delivery(seq, model.model_validate_json(data)))
            except ValidationError:
                continue
        return out

    async def _tick(self) -> None:
        """Wake every watch whose deadline passed (one loop over the open streams per tick)."""
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
            self._forget_ended(now)
            for watches in list(self._watches.values()):
                for watch in watches:
                    if watch.deadline <= now:
                        watch.deadline = math.inf
                        watch.wake()

    def register(self, generation_id: str) -> Watch:
        watch = Watch(generation_id)
        self._watches.setdefault(generation_id, []).append(watch)
        return watch

    def unregister(self, watch: Watch) -> None:
        watch.close()
        watches = self._watches.get(watch.generation_id)
        if watches is None:
            return
        with contextlib.suppress(ValueError):
            watches.remove(watch)
        if not watches:
            del self._watches[watch.generation_id]

    async def _on_reply(self, raw: Msg) -> None:
        replay = self._replays.get(raw.subject.rpartition(".")[2])
        if replay is None or replay.done.done():
            return
        status = (raw.headers or {}).get("Status") if not raw.data else None
        if status is not None:  # 204 end of batch, 404 nothing (more) stored, or a refusal
            if status in ("204", "404"):
                replay.done.set_result(None)
            else:
                replay.done.set_exception(ServiceUnavailableError(f"EVENTS replay refused: {status} {raw.headers}"))
            return
        replay.count += 1
        delivery = _decode_reply(raw)
        if delivery is not None:
            replay.items.append(delivery)

    async def _get_batch(self, generation_id: str, from_seq: int, min_last_seq: int) -> _Replay:
        token = str(next(self._tokens))
        replay = self._replays[token] = _Replay()
        request: dict[str, object] = {"seq": from_seq, "next_by_subj": generation_events(generation_id),
                                      "batch": REPLAY_BATCH}
        if min_last_seq:
            request["min_last_seq"] = min_last_seq
        try:
            await self._bus.nc.publish(f"$JS.API.DIRECT.GET.{Stream.EVENTS.value}", orjson.dumps(request),
                                       reply=f"{self._inbox}.{token}")
            async with asyncio.timeout(REPLAY_TIMEOUT_S):
                await replay.done
        except TimeoutError as exc:
            raise ServiceUnavailableError(f"EVENTS replay of {generation_id} timed out") from exc
        finally:
            del self._replays[token]
        return replay

    async def replay(self, generation_id: str, after_seq: int, min_last_seq: int = 0) -> list[Delivery]:
        """Stored events of the generation past `after_seq`, in stream order (batched direct gets)."""
        out: list[Delivery] = []
        cursor = after_seq + 1
        while True:
            replay = await self._get_batch(generation_id, cursor, min_last_seq)
            out.extend(replay.items)
            if replay.count < REPLAY_BATCH or not replay.items:
                return out
            cursor = replay.items[-1].seq + 1

    async def open(self, generation_id: str, after_seq: int = 0) -> tuple[Watch, list[Delivery]]:
        """A registered watch of `generation_id` and what is stored past `after_seq`; the watch then
        yields only later events. `unregister` it when done."""
        await self.start()
        kept = self._kept.get(generation_id)
        if kept is not None and not kept.verified:
            try:
                kept.verified = await self._verified(generation_id, kept)
            except (nats.errors.Error, TimeoutError):
                kept.verified = False
            if not kept.verified and self._kept.get(generation_id) is kept:
                del self._kept[generation_id]
        watch = self.register(generation_id)  # first: nothing stored from now on can be missed
        watch.last = after_seq
        kept = self._kept.get(generation_id)
        if kept is not None and kept.verified:  # in the same step as the registration: no gap, no repeat
            replayed = self._from_kept(kept, after_seq)
            if replayed:
                watch.last = replayed[-1].seq
            return watch, replayed
        try:
            async with self._opening:
                replayed = await self.replay(generation_id, after_seq, self.seen_seq)
        except BaseException:
            self.unregister(watch)
            raise
        if replayed:
            watch.last = replayed[-1].seq
        return watch, replayed

    async def follow(self, generation_id: str, after_seq: int = 0) -> AsyncGenerator[tuple[int, BusMessage], None]:
        """(stream seq, message) of `generation_id`'s events from `after_seq`+1 on, like `Bus.follow`."""
        watch, replayed = await self.open(generation_id, after_seq)
        try:
            batch: list[Delivery] | None = replayed
            while batch is not None:
                for delivery in batch:
                    yield delivery.seq, delivery.msg
                batch = await watch.next()
        finally:
            self.unregister(watch)
