"""SSE fan-out: one JetStream subscription per gateway process, shared by every SSE stream.

Each `/mma/stream` used to open its own ordered consumer on its generation's subject, so
NATS sent one copy of every line per stream and the gateway handled one flow per stream
(docs/bench.md: p99 654 ms at 1,000 lines/s over 2,000 streams). Now the gateway keeps one
ordered consumer on `mma.evt.>` that starts at new messages (it carries stream sequences in
its metadata) and hands each message to the streams watching its generation.

A stream (`Fanout.follow`) registers its queue FIRST, then asks the stream for the newest
sequence of its generation and replays everything after `after_seq` up to it with message
gets (no consumer). Anything stored after that ask reaches the shared subscription after the
registration, so it is in the queue; the queue is then served, dropping what the replay
already yielded (sequence <= the last one yielded). Together: from `after_seq`+1 on, every
message exactly once, in stream order - what `Bus.follow` yields, without a consumer each.

One `Fanout` per gateway process lives in `GatewayDeps.fanout`; `app.setup` starts it and
stops it after uvicorn has stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator

import nats.errors
import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from pydantic import ValidationError

from libs.bus import Bus, decode
from libs.errors import InvalidMessageError
from libs.schemas import EVENTS_ALL, MESSAGE_TYPES, TYPE_HEADER, BusMessage, Stream, generation_events

log = structlog.get_logger("gateway")

Item = tuple[int, BusMessage]


def _generation_of(subject: str) -> str | None:
    """`mma.evt.<generation id>.<kind>...` -> the generation id."""
    parts = subject.split(".", 3)
    return parts[2] if len(parts) >= 4 else None


def _decode_stored(raw: api.RawStreamMsg) -> BusMessage | None:
    """The typed message of a stored message (a message get), None when undecodable."""
    type_name = (raw.headers or {}).get(TYPE_HEADER)
    model = MESSAGE_TYPES.get(type_name) if type_name else None
    if model is None or raw.data is None:
        return None
    try:
        return model.model_validate_json(raw.data)
    except ValidationError:
        return None


class Fanout:
    """The shared live subscription of one bus connection, and its watchers by generation id."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus
        self._watchers: dict[str, set[asyncio.Queue[Item]]] = {}
        self._sub: JetStreamContext.PushSubscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.delivered = 0

    @property
    def is_running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def watching(self) -> int:
        return sum(len(queues) for queues in self._watchers.values())

    async def start(self) -> None:
        """Subscribe once (idempotent); messages stored after this returns all reach the hub."""
        async with self._lock:
            if self.is_running:
                return
            sub = await self._bus.js.subscribe(
                EVENTS_ALL, stream=Stream.EVENTS.value, ordered_consumer=True,
                config=api.ConsumerConfig(deliver_policy=api.DeliverPolicy.NEW),
                inactive_threshold=5.0,  # a live subscription is never idle: heartbeats
            )
            self._sub = sub
            self._task = asyncio.create_task(self._run(sub), name="sse-fanout")
            log.info("gateway.sse_fanout_started", subject=EVENTS_ALL)

    async def stop(self) -> None:
        async with self._lock:
            task, sub = self._task, self._sub
            self._task = self._sub = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

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
        generation_id = _generation_of(raw.subject)
        queues = self._watchers.get(generation_id) if generation_id is not None else None
        if not queues:
            return
        try:
            msg = decode(raw)
        except InvalidMessageError:
            return
        item = (raw.metadata.sequence.stream, msg)
        for queue in queues:
            queue.put_nowait(item)
        self.delivered += len(queues)

    def register(self, generation_id: str) -> asyncio.Queue[Item]:
        queue: asyncio.Queue[Item] = asyncio.Queue()
        self._watchers.setdefault(generation_id, set()).add(queue)
        return queue

    def unregister(self, generation_id: str, queue: asyncio.Queue[Item]) -> None:
        queues = self._watchers.get(generation_id)
        if queues is None:
            return
        queues.discard(queue)
        if not queues:
            del self._watchers[generation_id]

    async def _replay(self, generation_id: str, after_seq: int, upto_seq: int) -> AsyncIterator[Item]:
        """Stored messages of the generation with after_seq < seq <= upto_seq, by message gets."""
        subject = generation_events(generation_id)
        cursor = after_seq + 1
        while cursor <= upto_seq:
            try:
                raw = await self._bus.js.get_msg(Stream.EVENTS.value, seq=cursor, subject=subject, next=True)
            except nats.js.errors.NotFoundError:
                return  # nothing left at or after `cursor` (aged out): the live part takes over
            seq = int(raw.seq or 0)
            if seq < cursor:
                return
            msg = _decode_stored(raw)
            if msg is not None:
                yield seq, msg
            cursor = seq + 1

    async def follow(self, generation_id: str, after_seq: int = 0) -> AsyncGenerator[Item, None]:
        """(stream seq, message) of `generation_id`'s events from `after_seq`+1 on, like `Bus.follow`."""
        await self.start()
        queue = self.register(generation_id)  # first: nothing stored from now on can be missed
        try:
            last = after_seq
            upto = await self._bus.last_seq(generation_events(generation_id))
            if upto > last:
                async for seq, msg in self._replay(generation_id, last, upto):
                    last = seq
                    yield seq, msg
            while True:
                seq, msg = await queue.get()
                if seq <= last:
                    continue  # the replay already said it
                last = seq
                yield seq, msg
        finally:
            self.unregister(generation_id, queue)

