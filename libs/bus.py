"""The bus: NATS connection, JetStream streams, typed publish, consumers, request/reply.

Handlers never see a raw `Msg`. `consume` decodes the payload into its model, binds
its ids to the log context, runs the handler, sends in-progress acks while it runs,
acks only after it returns (so a crash redelivers instead of losing the effect),
naks retryable failures with a growing delay and dead-letters the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import nats
import nats.errors
import nats.js.errors
import orjson
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api
from pydantic import ValidationError

from libs import deadletter
from libs.errors import (
    InvalidMessageError,
    MmaError,
    ServiceUnavailableError,
    error_from_wire,
)
from libs.metrics import CONSUMER_LAG, DEAD_LETTERS, MESSAGES
from libs.schemas import (
    MESSAGE_TYPES,
    STREAM_SUBJECTS,
    TYPE_HEADER,
    BusMessage,
    Model,
    RpcRequest,
    Stream,
)
from libs.settings import Settings
from libs.transient import NATS_AWAY

log = structlog.get_logger("bus")

M = TypeVar("M", bound=BusMessage)
R = TypeVar("R", bound=Model)
Q = TypeVar("Q", bound=RpcRequest)
D = TypeVar("D")

Handler = Callable[[Any, D], Awaitable[None]]
RpcHandler = Callable[[Any, D], Awaitable[Model]]
ExhaustedHook = Callable[[Any, BaseException, D], Awaitable[None]]
# the decoded messages, in stream order (their JetStream metadata is parsed only where used)
BatchHandler = Callable[[list[Any], D], Awaitable[None]]

_TRANSIENT = NATS_AWAY
_TRANSIENT_OR_MISSING: tuple[type[BaseException], ...] = (nats.js.errors.NotFoundError, *NATS_AWAY)
_TRANSIENT_OR_API: tuple[type[BaseException], ...] = (nats.js.errors.APIError, *NATS_AWAY)


RESPONDER_POLL_S = 0.1


def _retry_delay(deliveries: int) -> float:
    """Nak delay: 0.5 s, 1 s, 2 s ... capped at 15 s."""
    return float(min(15.0, 0.5 * (2 ** max(0, deliveries - 1))))


def decode(raw: Msg, default: type[BusMessage] | None = None) -> BusMessage:
    """The typed message of a raw JetStream message; InvalidMessageError when impossible."""
    type_name = (raw.headers or {}).get(TYPE_HEADER)
    model = MESSAGE_TYPES.get(type_name) if type_name else default
    if model is None:
        raise InvalidMessageError(f"unknown message type {type_name!r} on {raw.subject}")
    try:
        return model.model_validate_json(raw.data)
    except ValidationError as exc:
        raise InvalidMessageError(f"invalid {model.__name__} on {raw.subject}: {exc.error_count()} errors") from exc


@dataclass
class Consumer:
    """A running durable pull consumer; `stop` finishes the messages in hand, then returns."""

    name: str
    task: asyncio.Task[None] | None = None
    inflight: set[asyncio.Task[None]] = field(default_factory=set)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    handled: int = 0

    async def stop(self, grace_s: float = 10.0) -> None:
        self.stopping.set()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self.task), grace_s)
        if self.inflight:
            await asyncio.wait(self.inflight, timeout=grace_s)
        for task in self.inflight:
            task.cancel()


@dataclass
class _Spec(Generic[D]):
    """What the per-message and batch paths of one durable consumer share."""

    stream: Stream
    durable: str
    handlers: Mapping[type[BusMessage], Handler[D]]
    deps: D
    on_exhausted: ExhaustedHook[D] | None
    max_deliver: int
    ack_wait: float
    consumer: Consumer
    retry_unavailable: bool = False

    @property
    def default_model(self) -> type[BusMessage] | None:
        """A consumer of one message type reads messages without a type header as that type."""
        return next(iter(self.handlers)) if len(self.handlers) == 1 else None

    def exhausted(self, deliveries: int) -> bool:
        return self.max_deliver > 0 and deliveries >= self.max_deliver


class _Heartbeat:
    """In-progress acks every `every_s` while a handler runs, for all of `raws`.

    A loop timer rather than a task per message: arming it costs one heap push, and it
    is re-armed only when it fires, i.e. only while a handler is still running.
    """

    def __init__(self, raws: Sequence[Msg], every_s: float) -> None:
        self.raws = raws
        self.every_s = every_s
        self.loop = asyncio.get_running_loop()
        self.beat: asyncio.Task[None] | None = None  # held so the task is not collected mid-send
        self.timer = self.loop.call_later(every_s, self._fire)

    def _fire(self) -> None:
        self.beat = self.loop.create_task(self._send())
        self.timer = self.loop.call_later(self.every_s, self._fire)

    async def _send(self) -> None:
        for raw in self.raws:
            with contextlib.suppress(*_TRANSIENT, nats.errors.MsgAlreadyAckdError):
                await raw.in_progress()

    def cancel(self) -> None:
        self.timer.cancel()


class Bus:
    """One NATS connection per process, with its JetStream context."""

    def __init__(self, nc: NatsClient, settings: Settings, name: str) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.settings = settings
        self.name = name
        self._rpc_tasks: set[asyncio.Task[None]] = set()
        self._subs: list[Any] = []
        self._consumers: list[Consumer] = []
        self.dead_letters = 0

    # ------------------------------------------------------------------ connection

    @classmethod
    async def connect(cls, settings: Settings, url: str, name: str, connect_timeout_s: float = 30.0) -> Bus:
        """Connect, retrying while the server comes up; reconnect forever afterwards."""

        async def on_error(exc: Exception) -> None:
            log.warning("bus.connection_error", error=repr(exc))

        async def on_disconnected() -> None:
            log.warning("bus.disconnected")

        async def on_reconnected() -> None:
            log.info("bus.reconnected")

        deadline = time.monotonic() + connect_timeout_s
        while True:
            try:
                nc = await nats.connect(
                    url,
                    name=name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    connect_timeout=2,
                    error_cb=on_error,
                    disconnected_cb=on_disconnected,
                    reconnected_cb=on_reconnected,
                    pending_size=64 * 1024 * 1024,
                )
                break
            except (OSError, nats.errors.NoServersError, nats.errors.TimeoutError) as exc:
                if time.monotonic() > deadline:
                    raise ServiceUnavailableError(f"NATS at {url} is not answering") from exc
                await asyncio.sleep(0.25)
        log.info("bus.connected", url=url, client=name)
        return cls(nc, settings, name)

    @property
    def is_connected(self) -> bool:
        return bool(self.nc.is_connected)

    async def close(self) -> None:
        """Stop consumers (finishing what is in hand), then drain the connection."""
        for consumer in self._consumers:
            await consumer.stop()
        if self._rpc_tasks:
            await asyncio.wait(self._rpc_tasks, timeout=5)
        if not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.drain()

    # ------------------------------------------------------------------ streams

    def stream_config(self, stream: Stream) -> api.StreamConfig:
        """Every stream bounded by settings: EVENTS drops its oldest past its age or bytes (the ledger
        projected them long ago); a full work queue refuses new work instead of dropping accepted work."""
        is_events = stream is Stream.EVENTS
        s = self.settings
        return api.StreamConfig(
            name=stream.value,
            subjects=STREAM_SUBJECTS[stream],
            retention=api.RetentionPolicy.LIMITS if is_events else api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            max_age=float(s.events_max_age_days * 86400) if is_events else s.work_queue_max_age_s,
            max_bytes=s.events_max_bytes if is_events else s.work_queue_max_bytes,
            discard=api.DiscardPolicy.OLD if is_events else api.DiscardPolicy.NEW,
            duplicate_window=self.settings.dedupe_window_s,
            num_replicas=self.settings.stream_replicas,
            max_consumers=self.settings.events_max_consumers if is_events else None,
            allow_direct=True,
        )

    async def ensure_streams(self) -> None:
        """Create COMMANDS, JOBS, EVENTS and the dead letters, or bring their config up to date (idempotent)."""
        for stream in Stream:
            config = self.stream_config(stream)
            try:
                await self.js.stream_info(stream.value)
            except nats.js.errors.NotFoundError:
                with contextlib.suppress(nats.js.errors.BadRequestError):
                    await self.js.add_stream(config)
                continue
            await self.js.update_stream(config)
        await deadletter.ensure_stream(self.js, self.settings)

    async def streams_present(self) -> bool:
        try:
            for stream in Stream:
                await self.js.stream_info(stream.value)
        except _TRANSIENT_OR_MISSING:
            return False
        return True

    # ------------------------------------------------------------------ publish

    async def publish(self, msg: BusMessage, attempts_s: float = 60.0) -> api.PubAck:
        """Publish with the model's subject and msg id; retried while NATS is away.

        A retry inside the dedupe window is dropped by the server (the ack says duplicate),
        so retrying after a lost ack never doubles a message.
        """
        headers = {"Nats-Msg-Id": msg.msg_id(), TYPE_HEADER: type(msg).__name__}
        payload = msg.model_dump_json().encode()
        deadline = time.monotonic() + attempts_s
        delay = 0.1
        while True:
            try:
                ack = await self.js.publish(msg.subject(), payload, headers=headers, timeout=5)
                break
            except _TRANSIENT as exc:
                if time.monotonic() > deadline:
                    raise ServiceUnavailableError("bus publish failed", subject=msg.subject()) from exc
                log.warning("bus.publish_retry", subject=msg.subject(), error=repr(exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if ack.duplicate:
            log.debug("bus.publish_duplicate", subject=msg.subject(), msg_id=msg.msg_id(), stream_seq=ack.seq)
        elif self.settings.chaos_duplicate_publish:  # test mode: every consumer gets it twice
            await self.js.publish(msg.subject(), payload, headers={**headers, "Nats-Msg-Id": f"{msg.msg_id()}:dup"},
                                  timeout=5)
        return ack

    async def publish_all(self, messages: Sequence[BusMessage]) -> None:
        """Publish pipelined: every message is written to the connection, in order, before the
        first ack is awaited (stream order is list order), then the acks are awaited together.
        All are awaited even when one fails; then the first error is raised."""
        if len(messages) == 1:
            await self.publish(messages[0])
            return
        results = await asyncio.gather(*(self.publish(m) for m in messages), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    async def publish_raw(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Publish bytes as they are (tests, tools); production code uses `publish`."""
        await self.js.publish(subject, data, headers=headers)

    # ------------------------------------------------------------------ request / reply

    async def request(self, req: RpcRequest, reply: type[R], timeout: float | None = None) -> R:
        """Call the queue group serving `req`; its MmaError is raised again here.

        While nobody serves the subject (a service restarting), the call asks again for up to
        `rpc_responder_wait_s` (never longer than `timeout`): no responder means nobody got it.
        """
        timeout = timeout or self.settings.rpc_timeout_s
        give_up = time.monotonic() + min(timeout, self.settings.rpc_responder_wait_s)
        while True:
            try:
                raw = await self.nc.request(req.rpc_subject, req.model_dump_json().encode(), timeout=timeout)
                break
            except nats.errors.NoRespondersError as exc:
                if time.monotonic() >= give_up:
                    raise ServiceUnavailableError(f"no answer on {req.rpc_subject}", subject=req.rpc_subject) from exc
                await asyncio.sleep(RESPONDER_POLL_S)
            except _TRANSIENT as exc:
                raise ServiceUnavailableError(f"no answer on {req.rpc_subject}", subject=req.rpc_subject) from exc
        envelope = orjson.loads(raw.data)
        if not envelope.get("ok"):
            raise error_from_wire(envelope.get("error") or {})
        return reply.model_validate(envelope["data"])

    async def serve(self, req_type: type[Q], handler: RpcHandler[D], deps: D, queue: str,
                    concurrency: int | None = None) -> None:
        """Answer `req_type` requests in queue group `queue`, each in its own task, at most `concurrency`
        (default `rpc_concurrency`) at once: the rest wait in the subscription, not as tasks on the loop."""
        slots = asyncio.Semaphore(max(1, concurrency or self.settings.rpc_concurrency))

        async def respond(raw: Msg) -> None:
            started = time.perf_counter()
            outcome = "ok"
            try:
                req = req_type.model_validate_json(raw.data)
                result = await handler(req, deps)
                body = {"ok": True, "data": result.model_dump(mode="json")}
            except ValidationError as exc:
                outcome = "invalid"
                body = {"ok": False, "error": InvalidMessageError(f"invalid {req_type.__name__}: {exc}").to_wire()}
            except MmaError as exc:
                outcome = exc.instance_code
                body = {"ok": False, "error": exc.to_wire()}
            except Exception as exc:  # the edge: answer, log, never leave the caller hanging
                outcome = "error"
                log.exception("bus.rpc_failed", subject=raw.subject)
                # a bug answers a non-retryable INTERNAL_ERROR: a consumer calling it must not loop
                body = {"ok": False, "error": deadletter.rpc_error(exc, raw.subject).to_wire()}
            if raw.reply:
                with contextlib.suppress(*_TRANSIENT):
                    await raw.respond(orjson.dumps(body))
            log.debug("bus.rpc_handled", subject=raw.subject, outcome=outcome,
                      duration_ms=round((time.perf_counter() - started) * 1000, 2))

        async def on_msg(raw: Msg) -> None:  # one message at a time per subscription: waiting here backs up
            await slots.acquire()
            task = asyncio.create_task(respond(raw))
            self._rpc_tasks.add(task)
            task.add_done_callback(self._rpc_tasks.discard)
            task.add_done_callback(lambda _: slots.release())

        self._subs.append(await self.nc.subscribe(req_type.rpc_subject, queue=queue, cb=on_msg))

    # ------------------------------------------------------------------ consumers

    async def consume(
        self,
        *,
        stream: Stream,
        durable: str,
        filter_subject: str,
        handlers: Mapping[type[BusMessage], Handler[D]],
        deps: D,
        concurrency: int = 1,
        max_deliver: int | None = None,
        on_exhausted: ExhaustedHook[D] | None = None,
        batch: int = 64,
        retry_unavailable: bool = False,
    ) -> Consumer:
        """Run a durable pull consumer until `close`.

        With `concurrency=1` messages are handled one after the other in stream order.
        A failing message is retried up to `max_deliver` deliveries (default: the
        `max_deliveries` setting), then dead-lettered; with `retry_unavailable` a dependency
        that is away is waited for without bound (`deadletter.should_retry`). Decode
        failures and non-retryable errors are dead-lettered at once.
        """
        spec = _Spec(stream, durable, handlers, deps, on_exhausted,
                     self.settings.max_deliveries if max_deliver is None else max_deliver,
                     self.settings.ack_wait_s, Consumer(name=durable), retry_unavailable)
        psub = await self._pull_subscribe(spec, filter_subject, max_ack_pending=max(concurrency * 2, 1000))
        consumer = spec.consumer
        slots = asyncio.Semaphore(concurrency)

        async def run_one(raw: Msg) -> None:
            try:
                msg = await self._decode_or_reject(spec, raw)
                if msg is not None:
                    await self._handle_one(spec, raw, msg)
            except Exception:
                # a failure while acking or dead-lettering: the message is redelivered
                log.exception("bus.process_crashed", subject=raw.subject)
            finally:
                slots.release()

        async def want() -> int:
            await slots.acquire()
            slots.release()
            return max(1, min(batch, concurrency - len(consumer.inflight)))

        async def take(msgs: list[Msg]) -> None:
            for raw in msgs:
                await slots.acquire()
                if concurrency == 1:
                    await run_one(raw)
                    continue
                task = asyncio.create_task(run_one(raw))
                consumer.inflight.add(task)
                task.add_done_callback(consumer.inflight.discard)

        return self._start(spec, filter_subject, self._pull_loop(spec, psub, want, take))

    async def consume_batch(
        self,
        *,
        stream: Stream,
        durable: str,
        filter_subject: str,
        handlers: Mapping[type[BusMessage], Handler[D]],
        batch_handler: BatchHandler[D],
        deps: D,
        max_deliver: int | None = None,
        on_exhausted: ExhaustedHook[D] | None = None,
        batch: int = 256,
        retry_unavailable: bool = False,
    ) -> Consumer:
        """`consume` with concurrency 1, but up to `batch` messages go to ONE `batch_handler` call.

        Stream order is kept. Undecodable messages are dead-lettered one by one and left out.
        One heartbeat covers the batch; every message is acked after the handler returns.
        A dependency that is away naks the whole batch (each with its usual delay); any other
        failure (bad data or a bug somewhere in it) re-runs the batch one message at a time
        through `handlers`, so only the bad message is retried, then dead-lettered.
        """
        spec = _Spec(stream, durable, handlers, deps, on_exhausted,
                     self.settings.max_deliveries if max_deliver is None else max_deliver,
                     self.settings.ack_wait_s, Consumer(name=durable), retry_unavailable)
        psub = await self._pull_subscribe(spec, filter_subject, max_ack_pending=max(batch * 2, 1000))

        async def want() -> int:
            return batch

        async def take(raws: list[Msg]) -> None:
            try:
                await self._handle_batch(spec, raws, batch_handler)
            except Exception:
                # a failure while acking or dead-lettering: the unacked messages are redelivered
                log.exception("bus.batch_crashed", durable=durable, count=len(raws))

        return self._start(spec, filter_subject, self._pull_loop(spec, psub, want, take, overlap=True))

    # ------------------------------------------------------------------ consumer internals

    async def _pull_subscribe(self, spec: _Spec[Any], filter_subject: str, max_ack_pending: int) -> Any:
        config = api.ConsumerConfig(
            durable_name=spec.durable,
            ack_policy=api.AckPolicy.EXPLICIT,
            deliver_policy=api.DeliverPolicy.ALL,
            ack_wait=spec.ack_wait,
            max_deliver=-1,  # the bound is ours (`_handle_one`): the server would drop the last one silently
            max_ack_pending=max_ack_pending,
            filter_subject=filter_subject,
        )
        return await self.js.pull_subscribe(filter_subject, durable=spec.durable, stream=spec.stream.value,
                                            config=config)

    def _start(self, spec: _Spec[Any], filter_subject: str, loop: Coroutine[Any, Any, None]) -> Consumer:
        spec.consumer.task = asyncio.create_task(loop, name=f"consumer:{spec.durable}")
        self._consumers.append(spec.consumer)
        log.info("bus.consumer_started", durable=spec.durable, stream=spec.stream.value, filter=filter_subject)
        return spec.consumer

    async def _pull_loop(self, spec: _Spec[Any], psub: Any, want: Callable[[], Awaitable[int]],
                         take: Callable[[list[Msg]], Coroutine[Any, Any, None]], overlap: bool = False) -> None:
        """Fetch `await want()` messages at a time and hand them to `take` until stopped.

        With `overlap`, the next fetch runs while `take` handles the previous messages (the
        fetch round trip hides behind the batch's transaction); `take` calls still run one
        after the other, in stream order.
        """
        taking: asyncio.Task[None] | None = None
        try:
            while not spec.consumer.stopping.is_set():
                size = await want()
                try:
                    msgs = await psub.fetch(size, timeout=1.0)
                except nats.errors.TimeoutError:
                    continue
                except _TRANSIENT_OR_API as exc:
                    log.warning("bus.fetch_failed", durable=spec.durable, error=repr(exc))
                    await asyncio.sleep(0.5)
                    continue
                if taking is not None:
                    await taking
                    taking = None
                if overlap:
                    taking = asyncio.create_task(take(msgs))
                else:
                    await take(msgs)
        finally:
            if taking is not None:
                await taking
            # an unsubscribed pull subscription lets the connection drain at once
            with contextlib.suppress(Exception):
                await psub.unsubscribe()

    async def _decode_or_reject(self, spec: _Spec[Any], raw: Msg) -> BusMessage | None:
        """The typed message, or None once an undecodable/unhandled one is dead-lettered and termed."""
        try:
            msg = decode(raw, spec.default_model)
            if type(msg) not in spec.handlers:
                raise InvalidMessageError(f"no handler for {type(msg).__name__} on {spec.durable}")
            return msg
        except InvalidMessageError as exc:
            meta = raw.metadata
            log.error("bus.message_invalid", subject=raw.subject, stream_seq=meta.sequence.stream, reason=exc.message)
            await self._reject(spec, raw, exc.message, exc.instance_code)
            return None

    async def _reject(self, spec: _Spec[Any], raw: Msg, reason: str, code: str) -> None:
        """Dead-letter and term: this message is never redelivered."""
        meta = raw.metadata
        await self._dead_letter(spec, raw, meta.sequence.stream, meta.num_delivered, reason, code)
        await raw.term()

    async def _ack(self, spec: _Spec[Any], raws: Sequence[Msg]) -> None:
        for raw in raws:
            with contextlib.suppress(*_TRANSIENT):
                await raw.ack()
        spec.consumer.handled += len(raws)
        MESSAGES.labels(spec.durable, "ok").inc(len(raws))
        CONSUMER_LAG.labels(spec.durable).set(raws[-1].metadata.num_pending)

    async def _handle_one(self, spec: _Spec[Any], raw: Msg, msg: BusMessage) -> None:
        """Run the message's handler with a heartbeat; ack, nak with a delay, or dead-letter."""
        meta = raw.metadata
        deliveries = meta.num_delivered
        started = time.perf_counter()
        with structlog.contextvars.bound_contextvars(subject=raw.subject, stream_seq=meta.sequence.stream,
                                                     **msg.log_fields()):
            heartbeat = _Heartbeat([raw], spec.ack_wait / 3)
            try:
                await spec.handlers[type(msg)](msg, spec.deps)
            except Exception as exc:  # the edge: decide nak or term, never swallow silently
                if deadletter.should_retry(exc, deliveries, spec.max_deliver, spec.retry_unavailable):
                    await self._nak(spec, [raw], exc)
                    return
                log.error("bus.message_failed", error=repr(exc), deliveries=deliveries,
                          exhausted=spec.exhausted(deliveries), durable=spec.durable)
                if spec.on_exhausted is not None:
                    await spec.on_exhausted(msg, exc, spec.deps)
                await self._reject(spec, raw, deadletter.reason_of(exc), deadletter.code_of(exc))
                MESSAGES.labels(spec.durable, "failed").inc()
                return
            finally:
                heartbeat.cancel()
            await self._ack(spec, [raw])
            log.debug("bus.message_handled", deliveries=deliveries,
                      duration_ms=round((time.perf_counter() - started) * 1000, 2))

    async def _nak(self, spec: _Spec[Any], raws: Sequence[Msg], exc: BaseException) -> None:
        """Redeliver later, each message after its own growing delay."""
        deliveries = max(raw.metadata.num_delivered for raw in raws)
        log.warning("bus.message_nak", error=repr(exc), deliveries=deliveries, delay_s=_retry_delay(deliveries),
                    count=len(raws))
        for raw in raws:
            with contextlib.suppress(*_TRANSIENT):
                await raw.nak(delay=_retry_delay(raw.metadata.num_delivered))
        MESSAGES.labels(spec.durable, "nak").inc(len(raws))

    async def _handle_batch(self, spec: _Spec[Any], raws: list[Msg], batch_handler: BatchHandler[Any]) -> None:
        good: list[tuple[Msg, BusMessage]] = []
        for raw in raws:
            msg = await self._decode_or_reject(spec, raw)
            if msg is not None:
                good.append((raw, msg))
        if not good:
            return
        in_hand = [raw for raw, _ in good]
        heartbeat = _Heartbeat(in_hand, spec.ack_wait / 3)
        try:
            await batch_handler([msg for _, msg in good], spec.deps)
        except Exception as exc:  # the edge: nak all, or find the bad message one at a time
            exhausted = any(spec.exhausted(raw.metadata.num_delivered) for raw in in_hand)
            if deadletter.is_unavailable(exc) and (spec.retry_unavailable or not exhausted):
                await self._nak(spec, in_hand, exc)
                return
            log.warning("bus.batch_failed", error=repr(exc), count=len(good), exhausted=exhausted)
            heartbeat.cancel()  # each message gets its own from here on
            for raw, msg in good:
                await self._handle_one(spec, raw, msg)
            return
        finally:
            heartbeat.cancel()
        await self._ack(spec, in_hand)

    async def _dead_letter(self, spec: _Spec[Any], raw: Msg, seq: int, deliveries: int, reason: str,
                           code: str) -> None:
        """Keep the message in the retained dead-letter stream, then report it (`deadletter.give_up`)."""
        await deadletter.give_up(self.js, self.publish, consumer=spec.durable, subject=raw.subject, data=raw.data,
                                 headers=raw.headers, stream=spec.stream.value, stream_seq=seq,
                                 deliveries=deliveries, reason=reason, code=code)
        self.dead_letters += 1
        DEAD_LETTERS.labels(spec.stream.value).inc()

    # ------------------------------------------------------------------ broadcast

    async def listen(self, filter_subject: str, handler: Callable[[BusMessage], Awaitable[None]]) -> None:
        """Every process gets every EVENTS message on `filter_subject` (core NATS, no queue group).

        For signals each instance must see but none must persist (a cancel request reaches
        the one pipeline running that generation). Nothing is replayed: a process that was
        not listening learns it from the stream instead (`last_seq`).
        """

        async def on_msg(raw: Msg) -> None:
            try:
                msg = decode(raw)
            except InvalidMessageError as exc:
                log.warning("bus.broadcast_invalid", subject=raw.subject, reason=exc.message)
                return
            try:
                await handler(msg)
            except Exception:  # the edge of a broadcast: nothing to redeliver, so log loudly
                log.exception("bus.broadcast_failed", subject=raw.subject)

        self._subs.append(await self.nc.subscribe(filter_subject, cb=on_msg))

    # ------------------------------------------------------------------ replay

    async def follow(self, filter_subject: str, after_seq: int = 0) -> AsyncIterator[tuple[int, BusMessage]]:
        """Yield (stream seq, message) of EVENTS matching `filter_subject`, from `after_seq`+1 on.

        An ordered consumer: a reconnect resumes where it stopped, nothing repeats.
        Undecodable messages are skipped (the ledger dead-letters them).
        """
        if after_seq > 0:
            config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1)
        else:
            config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL)
        sub = await self.js.subscribe(
            filter_subject, stream=Stream.EVENTS.value, ordered_consumer=True, config=config,
            inactive_threshold=5.0,  # a live subscription is never idle: heartbeats
        )
        try:
            while True:
                raw = await sub.next_msg(timeout=None)
                try:
                    msg = decode(raw)
                except InvalidMessageError:
                    continue
                yield raw.metadata.sequence.stream, msg
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def last_seq(self, filter_subject: str) -> int:
        """The stream sequence of the newest EVENTS message on `filter_subject` (0 if none)."""
        try:
            raw = await self.js.get_last_msg(Stream.EVENTS.value, filter_subject)
        except nats.js.errors.NotFoundError:
            return 0
        return int(raw.seq or 0)

