"""What becomes of a delivered message, alone or in a fetched batch: ack, nak with a delay, or dead letter.

Handlers never see a raw `Msg`. The payload is decoded into its model, its ids are bound to the
log context, the handler runs while in-progress acks keep the message ours, and the ack comes only
after it returns, so a crash redelivers instead of losing the effect. A retryable failure is naked
with a growing delay; the rest, and what cannot be decoded, is dead-lettered and termed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from prometheus_client import Counter, Gauge

from libs import deadletter
from libs.bus.acks import ack_all, write
from libs.bus.codec import decode
from libs.bus.consumer import Consumer
from libs.bus.types import BatchHandler, D, ExhaustedHook, Handler
from libs.errors import InvalidMessageError
from libs.logging import bound
from libs.metrics import CONSUMER_LAG, DEAD_LETTERS, MESSAGES
from libs.schemas import BusMessage, Stream
from libs.transient import NATS_AWAY

log = structlog.get_logger("bus")

Publish = Callable[[BusMessage], Awaitable[object]]


def retry_delay(deliveries: int) -> float:
    """Nak delay: 0.5 s, 1 s, 2 s ... capped at 15 s."""
    return float(min(15.0, 0.5 * (2 ** max(0, deliveries - 1))))


class Heartbeats:
    """In-progress acks every `every_s` for every message a consumer has in hand, in one write.

    One loop timer per consumer, armed only while something is in hand: when it fires, the `+WPI`
    of every message held is written in one buffer (one flush), not one publish (and one timer) per
    message. A message held from just after a beat gets its first at most `every_s` later, as with a
    timer of its own.
    """

    def __init__(self, nc: NatsClient, every_s: float, consumer: Consumer) -> None:
        self.nc = nc
        self.consumer = consumer
        self.every_s = every_s
        self.held: dict[int, Msg] = {}
        self.timer: asyncio.TimerHandle | None = None
        self.beat: asyncio.Task[None] | None = None  # held so the task is not collected mid-send

    def hold(self, raws: Sequence[Msg]) -> Held:
        for raw in raws:
            self.held[id(raw)] = raw
        if self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.every_s, self._fire)
        return Held(self, raws)

    def release(self, raws: Sequence[Msg]) -> None:
        for raw in raws:
            self.held.pop(id(raw), None)

    def _fire(self) -> None:
        self.timer = None
        if not self.held:
            return
        replies = [raw.reply for raw in self.held.values() if raw.reply and not raw._ackd]
        self.timer = asyncio.get_running_loop().call_later(self.every_s, self._fire)
        if replies:
            self.beat = asyncio.get_running_loop().create_task(self._send(replies))

    async def _send(self, replies: list[str]) -> None:
        data = b"".join(f"PUB {reply} 4\r\n+WPI\r\n".encode() for reply in replies)
        nc = self.nc
        if nc.is_closed or nc.is_draining_pubs or not nc.is_connected:
            return  # the server redelivers what it does not hear about; a beat is never worth a buffer
        with contextlib.suppress(*NATS_AWAY):
            await write(nc, data)
            self.consumer.in_progress_sent += len(replies)


class Held:
    """Messages under a consumer's heartbeat until `cancel` (idempotent)."""

    __slots__ = ("beats", "raws")

    def __init__(self, beats: Heartbeats, raws: Sequence[Msg]) -> None:
        self.beats = beats
        self.raws = raws

    def cancel(self) -> None:
        self.beats.release(self.raws)


@dataclass
class Delivery(Generic[D]):
    """One durable consumer's handlers and rules, shared by its per-message and batch paths."""

    js: JetStreamContext
    publish: Publish  # for the DeadLettered report
    stream: Stream
    durable: str
    handlers: Mapping[type[BusMessage], Handler[D]]
    deps: D
    on_exhausted: ExhaustedHook[D] | None
    max_deliver: int
    ack_wait: float
    consumer: Consumer
    retry_unavailable: bool = False
    heartbeats: Heartbeats = field(init=False)
    acked: Counter = field(init=False)
    lag: Gauge = field(init=False)

    def __post_init__(self) -> None:
        self.heartbeats = Heartbeats(self.js._nc, self.ack_wait / 3, self.consumer)
        self.acked = MESSAGES.labels(self.durable, "ok")  # labelled once: `labels` costs a lookup per call
        self.lag = CONSUMER_LAG.labels(self.durable)

    @property
    def default_model(self) -> type[BusMessage] | None:
        """A consumer of one message type reads messages without a type header as that type."""
        return next(iter(self.handlers)) if len(self.handlers) == 1 else None

    def exhausted(self, deliveries: int) -> bool:
        return self.max_deliver > 0 and deliveries >= self.max_deliver

    async def decode_or_reject(self, raw: Msg) -> BusMessage | None:
        """The typed message, or None once an undecodable/unhandled one is dead-lettered and termed."""
        try:
            return self._decoded(raw)
        except InvalidMessageError as exc:
            await self._invalid(raw, exc)
            return None

    def _decoded(self, raw: Msg) -> BusMessage:
        msg = decode(raw, self.default_model)
        if type(msg) not in self.handlers:
            raise InvalidMessageError(f"no handler for {type(msg).__name__} on {self.durable}")
        return msg

    async def _invalid(self, raw: Msg, exc: InvalidMessageError) -> None:
        meta = raw.metadata
        log.error("bus.message_invalid", subject=raw.subject, stream_seq=meta.sequence.stream, reason=exc.message)
        await self.reject(raw, exc.message, exc.instance_code)

    async def handle_one(self, raw: Msg, msg: BusMessage) -> None:
        """Run the message's handler with a heartbeat; ack, nak with a delay, or dead-letter."""
        meta = raw.metadata
        deliveries = meta.num_delivered
        started = time.perf_counter()
        with bound(subject=raw.subject, stream_seq=meta.sequence.stream, **msg.log_fields()):
            heartbeat = self.heartbeats.hold([raw])
            try:
                await self.handlers[type(msg)](msg, self.deps)
            except Exception as exc:  # the edge: decide nak or term, never swallow silently
                if deadletter.should_retry(exc, deliveries, self.max_deliver, self.retry_unavailable):
                    await self.nak([raw], exc)
                    return
                log.error("bus.message_failed", error=repr(exc), deliveries=deliveries,
                          exhausted=self.exhausted(deliveries), durable=self.durable)
                if self.on_exhausted is not None:
                    await self.on_exhausted(msg, exc, self.deps)
                await self.reject(raw, deadletter.reason_of(exc), deadletter.code_of(exc))
                MESSAGES.labels(self.durable, "failed").inc()
                return
            finally:
                heartbeat.cancel()
            await self.ack([raw])
            log.debug("bus.message_handled", deliveries=deliveries,
                      duration_ms=round((time.perf_counter() - started) * 1000, 2))

    async def handle_batch(self, raws: list[Msg], batch_handler: BatchHandler[D]) -> None:
        """One `batch_handler` call for the decodable messages; on failure nak all (a dependency away)
        or re-run them one at a time, so only the bad message is retried, then dead-lettered."""
        good: list[tuple[Msg, BusMessage]] = []
        for raw in raws:  # no coroutine per message: only a bad one is awaited (dead-lettered)
            try:
                good.append((raw, self._decoded(raw)))
            except InvalidMessageError as exc:
                await self._invalid(raw, exc)
        if not good:
            return
        in_hand = [raw for raw, _ in good]
        heartbeat = self.heartbeats.hold(in_hand)
        try:
            await batch_handler([msg for _, msg in good], self.deps)
        except Exception as exc:  # the edge: nak all, or find the bad message one at a time
            exhausted = any(self.exhausted(raw.metadata.num_delivered) for raw in in_hand)
            if deadletter.is_unavailable(exc) and (self.retry_unavailable or not exhausted):
                await self.nak(in_hand, exc)
                return
            log.warning("bus.batch_failed", error=repr(exc), count=len(good), exhausted=exhausted)
            heartbeat.cancel()  # each message gets its own from here on
            for raw, msg in good:
                await self.handle_one(raw, msg)
            return
        finally:
            heartbeat.cancel()
        await self.ack(in_hand)

    async def ack(self, raws: Sequence[Msg]) -> None:
        """All in one write (`ack_all`); while NATS is away the server redelivers what it did not hear of."""
        with contextlib.suppress(*NATS_AWAY):
            await ack_all(self.js._nc, raws)
        self.consumer.handled += len(raws)
        self.acked.inc(len(raws))
        self.lag.set(raws[-1].metadata.num_pending)

    async def nak(self, raws: Sequence[Msg], exc: BaseException) -> None:
        """Redeliver later, each message after its own growing delay."""
        deliveries = max(raw.metadata.num_delivered for raw in raws)
        log.warning("bus.message_nak", error=repr(exc), deliveries=deliveries, delay_s=retry_delay(deliveries),
                    count=len(raws))
        for raw in raws:
            with contextlib.suppress(*NATS_AWAY):
                await raw.nak(delay=retry_delay(raw.metadata.num_delivered))
        MESSAGES.labels(self.durable, "nak").inc(len(raws))

    async def reject(self, raw: Msg, reason: str, code: str) -> None:
        """Dead-letter and term: this message is never redelivered."""
        meta = raw.metadata
        await self.dead_letter(raw, meta.sequence.stream, meta.num_delivered, reason, code)
        await raw.term()

    async def dead_letter(self, raw: Msg, seq: int, deliveries: int, reason: str, code: str) -> None:
        """Keep the message in the retained dead-letter stream, then report it (`deadletter.give_up`)."""
        await deadletter.give_up(self.js, self.publish, consumer=self.durable, subject=raw.subject, data=raw.data,
                                 headers=raw.headers, stream=self.stream.value, stream_seq=seq,
                                 deliveries=deliveries, reason=reason, code=code)
        self.consumer.dead_lettered += 1
        DEAD_LETTERS.labels(self.stream.value).inc()
