"""Reading EVENTS without a durable consumer: follow it in order from a sequence, find its newest
sequence, or hear live broadcasts that are never replayed."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncGenerator, Callable

import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

from libs.bus.codec import decode
from libs.bus.inline import subscribe_inline
from libs.errors import InvalidMessageError
from libs.schemas import BusMessage, Stream

log = structlog.get_logger("bus")


async def follow(js: JetStreamContext, filter_subject: str,
                 after_seq: int = 0) -> AsyncGenerator[tuple[int, BusMessage], None]:
    """Yield (stream seq, message) of EVENTS matching `filter_subject`, from `after_seq`+1 on.

    An ordered consumer: a reconnect resumes where it stopped, nothing repeats.
    Undecodable messages are skipped (the ledger dead-letters them).
    """
    if after_seq > 0:
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after_seq + 1)
    else:
        config = api.ConsumerConfig(deliver_policy=api.DeliverPolicy.ALL)
    sub = await js.subscribe(
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


async def last_seq(js: JetStreamContext, filter_subject: str) -> int:
    """The stream sequence of the newest EVENTS message on `filter_subject` (0 if none)."""
    try:
        raw = await js.get_last_msg(Stream.EVENTS.value, filter_subject)
    except nats.js.errors.NotFoundError:
        return 0
    return int(raw.seq or 0)


async def listen(nc: NatsClient, filter_subject: str, handler: Callable[[BusMessage], None]) -> Subscription:
    """Every process gets every EVENTS message on `filter_subject` (core NATS, no queue group).

    For signals each instance must see but none must persist (a cancel request reaches
    the one pipeline running that generation). Nothing is replayed: a process that was
    not listening learns it from the stream instead (`last_seq`). `handler` runs in the connection's
    reader (`inline.py`): it must not block.
    """

    if inspect.iscoroutinefunction(handler):  # it would never run: nothing awaits it in the reader
        raise TypeError(f"listen({filter_subject!r}) takes a plain function, not a coroutine function")

    def on_msg(raw: Msg) -> None:
        try:
            msg = decode(raw)
        except InvalidMessageError as exc:
            log.warning("bus.broadcast_invalid", subject=raw.subject, reason=exc.message)
            return
        try:
            handler(msg)
        except Exception:  # the edge of a broadcast: nothing to redeliver, so log loudly
            log.exception("bus.broadcast_failed", subject=raw.subject)

    return await subscribe_inline(nc, filter_subject, on_msg)
