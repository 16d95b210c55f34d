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

log = structlog.get_logger("gateway")

REPLAY_BATCH = 1000  # messages per direct-get batch (a generation says a few dozen)
REPLAY_TIMEOUT_S = 10.0
MAX_BACKLOG = 5000  # undelivered events one watch holds before it gives up (a reader that stopped reading)
DECISION_KINDS = ("accepted", "rejected")


class Delivery:
    """One stored event handed to the watches of its generation; `sse` caches its encoding (once per event,
    however many streams write it)."""

    __slots__ = ("msg", "seq", "sse")

    def __init__(self, seq: int, msg: BusMessage) -> None:
        self.seq = seq
        self.msg = msg
        self.sse: bytes | None = None


class Watch:
    """What one follower of a generation gets: the deliveries since it last asked, in stream order, once."""

    __slots__ = ("_items", "_waiter", "closed", "deadline", "generation_id", "last", "overflowed")

    def __init__(self, generation_id: str) -> None:
        self.generation_id = generation_id
        self._items: list[Delivery] = []
        self._waiter: asyncio.Future[None] | None = None
        self.last = 0  # the newest sequence handed out
        self.closed = False
        self.overflowed = False
        self.deadline = math.inf  # monotonic time of the wake-up it asked for (`Fanout` ticker)

    def put(self, delivery: Delivery) -> None:
        if self.closed:
            return
        self._items.append(delivery)
        if len(self._items) > MAX_BACKLOG:
            self.overflowed = True
            self.closed = True
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """The reader went away: `next` answers None from now on."""
        self.closed = True
        self.wake()

    async def next(self) -> list[Delivery] | None:
        """What arrived since the last call, past `last` ([] for a bare wake-up); None once closed."""
        if not self._items and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.closed:
            return None
        items, self._items = self._items, []
        fresh = [d for d in items if d.seq > self.last]
        if fresh:
            self.last = fresh[-1].seq
        return fresh


def _generation_of(subject: str) -> tuple[str, str] | None:
    """`mma.evt.<generation id>.<kind>...` -> (generation id, kind)."""
    parts = subject.split(".", 4)
    return (parts[2], parts[3]) if len(parts) >= 4 else None


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
        self.tick_s = tick_s
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
                EVENTS_ALL, stream=Stream.EVENTS.value, ordered_consumer=True,
                config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.NEW),
                inactive_threshold=5.0,  # a live subscription is never idle: heartbeats
            )
            self._sub = sub
            self._tasks = [asyncio.create_task(self._run(sub), name="sse-fanout"),
                           asyncio.create_task(self._tick(), name="sse-ticker")]
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

    async def _run(self, sub: JetStreamContext.PushSubscription) -> None:
        while True:
            try:
                raw = await sub.next_msg(timeout=None)
            except asyncio.CancelledError:
                raise
            except (nats.errors.ConnectionClosedError, nats.errors.BadSubscriptionError):
                log.warning("gateway.sse_fanout_closed")
                return
            except Exception:  # keep the one subscription alive whatever one message did
                log.exception("gateway.sse_fanout_failed")
                await asyncio.sleep(0.1)
                continue
            self._dispatch(raw)

    def _dispatch(self, raw: Msg) -> None:
        seq = raw.metadata.sequence.stream
        self.seen_seq = max(self.seen_seq, seq)
        found = _generation_of(raw.subject)
        if found is None:
            return
        generation_id, kind = found
        if kind in DECISION_KINDS and self.on_decision_stored is not None:
            self.on_decision_stored(generation_id)
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

    async def _tick(self) -> None:
        """Wake every watch whose deadline passed (one loop over the open streams per tick)."""
        while True:
            await asyncio.sleep(self.tick_s)
            now = time.monotonic()
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
            await asyncio.wait_for(replay.done, REPLAY_TIMEOUT_S)
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
        watch = self.register(generation_id)  # first: nothing stored from now on can be missed
        watch.last = after_seq
        try:
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
