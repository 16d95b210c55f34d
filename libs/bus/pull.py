"""Durable pull consumers: subscribe, fetch, and hand what comes to a `Delivery`, one by one or in batches."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Coroutine

import nats.js.errors
import structlog
from nats.aio.msg import Msg
from nats.js import JetStreamContext, api

from libs.bus.consumer import Consumer
from libs.bus.delivery import Delivery
from libs.bus.fetch import ENDED, Fetcher
from libs.bus.retry import retried
from libs.bus.types import BatchHandler, D
from libs.transient import NATS_AWAY

log = structlog.get_logger("bus")

FETCH_WAIT_S = 1.0  # a fetch that finds nothing returns after this, so a stop is seen
FETCH_RETRY_S = 0.5  # between fetches while NATS is away
FILL_FROM = 4  # a last batch this big marks a consumer as busy (`fill_s`)

Take = Callable[[list[Msg]], Coroutine[object, None, None]]


async def start_each(delivery: Delivery[D], filter_subject: str, concurrency: int, batch: int) -> Consumer:
    """Messages handled alone, at most `concurrency` at once; with 1, one after the other in stream order."""
    fetcher = await _subscribe(delivery, filter_subject, max_ack_pending=max(concurrency * 2, 1000))
    consumer = delivery.consumer
    slots = asyncio.Semaphore(concurrency)

    async def run_one(raw: Msg) -> None:
        try:
            msg = await delivery.decode_or_reject(raw)
            if msg is not None:
                await delivery.handle_one(raw, msg)
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

    return _start(delivery, filter_subject, _pull_loop(consumer, fetcher, want, take))


async def start_batches(delivery: Delivery[D], filter_subject: str, batch_handler: BatchHandler[D],
                        batch: int, fill_s: float = 0.0) -> Consumer:
    """Up to `batch` messages per `batch_handler` call, in stream order; the next fetch overlaps the call.
    With `fill_s`, a busy consumer waits up to that long for a fuller batch (`_pull_loop`)."""
    fetcher = await _subscribe(delivery, filter_subject, max_ack_pending=max(batch * 2, 1000))

    async def want() -> int:
        return batch

    async def take(raws: list[Msg]) -> None:
        try:
            await delivery.handle_batch(raws, batch_handler)
        except Exception:
            # a failure while acking or dead-lettering: the unacked messages are redelivered
            log.exception("bus.batch_crashed", durable=delivery.durable, count=len(raws))

    return _start(delivery, filter_subject, _pull_loop(delivery.consumer, fetcher, want, take, overlap=True,
                                                              fill_s=fill_s))


async def _subscribe(delivery: Delivery[D], filter_subject: str, max_ack_pending: int) -> Fetcher:
    """The durable made or found (its ack window raised to `max_ack_pending` if smaller), and a fetcher."""
    config = api.ConsumerConfig(
        durable_name=delivery.durable,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_wait=delivery.ack_wait,
        max_deliver=-1,  # the bound is ours (`Delivery.handle_one`): the server would drop the last one silently
        max_ack_pending=max_ack_pending,
        filter_subject=filter_subject,
    )
    await ensure_consumer(delivery.js, delivery.stream.value, config)
    fetcher = Fetcher(delivery.js._nc, delivery.stream.value, delivery.durable)
    await fetcher.start()
    return fetcher


async def ensure_consumer(js: JetStreamContext, stream: str, config: api.ConsumerConfig) -> None:
    """Create the durable with `config`, or keep the one there: a durable keeps the config it was created
    with, except its `max_ack_pending`, raised in place when smaller than `config`'s (never lowered).

    One created when batches were smaller would cap every fetch, and the fetch overlapping a batch
    would find nothing until that batch is acked.
    """
    durable = config.durable_name
    assert durable is not None
    try:
        info = await js.consumer_info(stream, durable)
    except nats.js.errors.NotFoundError:
        await js.add_consumer(stream, config=config)
        return
    current, wanted = info.config.max_ack_pending, config.max_ack_pending
    if wanted is None or current is None or current < 0 or current >= wanted:  # -1: no limit
        return
    info.config.max_ack_pending = wanted
    await js.add_consumer(stream, config=info.config)
    log.info("bus.ack_window_widened", durable=durable, max_ack_pending=wanted, was=current)


def _start(delivery: Delivery[D], filter_subject: str, loop: Coroutine[object, None, None]) -> Consumer:
    consumer = delivery.consumer
    consumer.task = asyncio.create_task(loop, name=f"consumer:{delivery.durable}")
    log.info("bus.consumer_started", durable=delivery.durable, stream=delivery.stream.value, filter=filter_subject)
    return consumer


async def _pull_loop(consumer: Consumer, fetcher: Fetcher, want: Callable[[], Awaitable[int]],
                     take: Take, overlap: bool = False, fill_s: float = 0.0) -> None:
    """Fetch `await want()` messages at a time and hand them to `take` until stopped.

    With `overlap`, the next fetch runs while `take` handles the previous messages (the
    fetch round trip hides behind the batch's transaction), with a lingering request, so
    that everything that came meanwhile makes the next batch; `take` calls still run one
    after the other, in stream order.

    With `fill_s`, a busy consumer (the batch's first message came while the previous batch
    was still being handled, or that batch held `FILL_FROM` messages or more) hands a partial
    batch over only once `fill_s` has passed since that message was fetched: a batch's fixed
    cost (a transaction, its round trips, the ack) is paid for more messages under load, while
    a quiet consumer hands each message over at once.
    """
    loop = asyncio.get_running_loop()
    taking: asyncio.Task[None] | None = None
    last = 0  # messages in the last batch handed over
    try:
        while not consumer.stopping.is_set():
            size = await want()
            msgs = await _fetch(consumer, fetcher, size, linger=overlap)
            if not msgs:
                continue
            consumer.fetched += len(msgs)
            busy = last >= FILL_FROM or (taking is not None and not taking.done())
            ready_at = loop.time() + fill_s if fill_s and busy else 0.0
            if taking is not None:
                await taking
                taking = None
                # what came while it ran, for the lingering request (`Fetcher.fetch`), joins this batch
                msgs += _more(consumer, fetcher.take(size - len(msgs)))
            if ready_at and len(msgs) < size and not consumer.stopping.is_set():
                with contextlib.suppress(*NATS_AWAY):
                    await fetcher.gather(size - len(msgs), ready_at)
                msgs += _more(consumer, fetcher.take(size - len(msgs)))
            last = len(msgs)
            if overlap:
                taking = asyncio.create_task(take(msgs))
            else:
                await take(msgs)
    finally:
        if taking is not None:
            await taking
        # an unsubscribed inbox lets the connection drain at once
        with contextlib.suppress(Exception):
            await fetcher.stop()


def _more(consumer: Consumer, msgs: list[Msg]) -> list[Msg]:
    consumer.fetched += len(msgs)
    return msgs


async def _fetch(consumer: Consumer, fetcher: Fetcher, size: int, linger: bool) -> list[Msg]:
    """Up to `size` messages; none when nothing came within a second, or when NATS is away and the
    consumer is stopping. While NATS is away otherwise, fetching is tried again every 0.5 s."""

    def away(exc: Exception) -> bool:
        if not isinstance(exc, NATS_AWAY):
            return False
        log.warning("bus.fetch_failed", durable=consumer.name, error=repr(exc))
        return not consumer.stopping.is_set()

    async def once() -> list[Msg]:
        if not fetcher.nc.is_connected:  # a request buffered meanwhile would be one more open at reconnect
            await _pause(consumer)
            return []
        msgs, status = await fetcher.fetch(size, FETCH_WAIT_S, linger)
        if not msgs and status and status not in ENDED:  # 409 and the like: not in a tight loop
            await _pause(consumer)
        return msgs

    try:
        return await retried(once, on=away, timeout_s=None, wait_s=FETCH_RETRY_S)
    except NATS_AWAY:
        return []


async def _pause(consumer: Consumer) -> None:
    """FETCH_RETRY_S, or less when the consumer is told to stop."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(FETCH_RETRY_S):
            await consumer.stopping.wait()
