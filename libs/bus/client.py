"""`Bus`: what a service holds. One NATS connection and its JetStream context, and the calls services
make on them; each call's work lives in the module named beside it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

from nats.aio.client import Client as NatsClient
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext, api

from libs.bus import follow as _follow
from libs.bus import pull, streams
from libs.bus.acks import Outgoing
from libs.bus.chaos import publisher_type
from libs.bus.connection import open_connection
from libs.bus.consumer import Consumer
from libs.bus.delivery import Delivery
from libs.bus.rpc import Rpc
from libs.bus.types import BatchHandler, D, ExhaustedHook, Handler, Q, R, RpcHandler
from libs.schemas import BusMessage, RpcRequest, Stream
from libs.settings import Settings


class Bus:
    """One NATS connection per process, with its JetStream context."""

    def __init__(self, nc: NatsClient, settings: Settings, name: str) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.settings = settings
        self.name = name
        self.publisher = publisher_type(settings)(self.js)  # the fault suite's duplicating one, if asked
        self.rpc = Rpc(nc, settings)
        self.subscriptions: list[Subscription] = []
        self.consumers: list[Consumer] = []

    # ------------------------------------------------------------------ connection (connection.py)

    @classmethod
    async def connect(cls, settings: Settings, url: str, name: str, connect_timeout_s: float = 30.0) -> Bus:
        """Connect, retrying while the server comes up; reconnect forever afterwards."""
        return cls(await open_connection(url, name, connect_timeout_s), settings, name)

    @property
    def is_connected(self) -> bool:
        return bool(self.nc.is_connected)

    @property
    def dead_letters(self) -> int:
        """Messages this process's consumers gave up on."""
        return sum(consumer.dead_lettered for consumer in self.consumers)

    async def close(self) -> None:
        """Stop consumers (finishing what is in hand), then drain the connection."""
        for consumer in self.consumers:
            await consumer.stop()
        await self.rpc.close()
        if not self.nc.is_closed:
            with contextlib.suppress(Exception):
                await self.nc.drain()

    # ------------------------------------------------------------------ streams (streams.py)

    def stream_config(self, stream: Stream) -> api.StreamConfig:
        return streams.stream_config(self.settings, stream)

    async def ensure_streams(self) -> None:
        await streams.ensure_streams(self.js, self.settings)

    async def streams_present(self) -> bool:
        return await streams.streams_present(self.js)

    # ------------------------------------------------------------------ publish (publish.py)

    async def publish(self, msg: BusMessage, attempts_s: float = 60.0) -> api.PubAck:
        return await self.publisher.publish(msg, attempts_s)

    async def publish_all(self, messages: Sequence[BusMessage], encoded: Sequence[Outgoing] | None = None) -> None:
        await self.publisher.publish_all(messages, encoded)

    async def publish_raw(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        await self.publisher.publish_raw(subject, data, headers)

    # ------------------------------------------------------------------ request / reply (rpc.py)

    async def request(self, req: RpcRequest, reply: type[R], timeout: float | None = None) -> R:
        return await self.rpc.request(req, reply, timeout)

    async def serve(self, req_type: type[Q], handler: RpcHandler[Q, D], deps: D, queue: str,
                    concurrency: int | None = None) -> None:
        self.subscriptions.append(await self.rpc.serve(req_type, handler, deps, queue, concurrency))

    # ------------------------------------------------------------------ consumers (pull.py, delivery.py)

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
        delivery = self._delivery(stream, durable, handlers, deps, max_deliver, on_exhausted, retry_unavailable)
        return self._running(await pull.start_each(delivery, filter_subject, concurrency, batch))

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
        fill_s: float = 0.0,
    ) -> Consumer:
        """`consume` with concurrency 1, but up to `batch` messages go to ONE `batch_handler` call.

        Stream order is kept. Undecodable messages are dead-lettered one by one and left out.
        One heartbeat covers the batch; every message is acked after the handler returns.
        A dependency that is away naks the whole batch (each with its usual delay); any other
        failure (bad data or a bug somewhere in it) re-runs the batch one message at a time
        through `handlers`, so only the bad message is retried, then dead-lettered.
        With `fill_s`, a busy consumer waits up to that long for a fuller batch (`pull._pull_loop`).
        """
        delivery = self._delivery(stream, durable, handlers, deps, max_deliver, on_exhausted, retry_unavailable)
        return self._running(await pull.start_batches(delivery, filter_subject, batch_handler, batch, fill_s))

    def _delivery(self, stream: Stream, durable: str, handlers: Mapping[type[BusMessage], Handler[D]], deps: D,
                  max_deliver: int | None, on_exhausted: ExhaustedHook[D] | None,
                  retry_unavailable: bool) -> Delivery[D]:
        return Delivery(self.js, self.publish, stream, durable, handlers, deps, on_exhausted,
                        self.settings.max_deliveries if max_deliver is None else max_deliver,
                        self.settings.ack_wait_s, Consumer(name=durable), retry_unavailable)

    def _running(self, consumer: Consumer) -> Consumer:
        self.consumers.append(consumer)
        return consumer

    # ------------------------------------------------------------------ EVENTS without a durable (follow.py)

    async def listen(self, filter_subject: str, handler: Callable[[BusMessage], None]) -> None:
        self.subscriptions.append(await _follow.listen(self.nc, filter_subject, handler))

    def follow(self, filter_subject: str, after_seq: int = 0) -> AsyncIterator[tuple[int, BusMessage]]:
        # an async generator underneath (gateway/submit.py casts it back to close it deterministically)
        return _follow.follow(self.js, filter_subject, after_seq)

    async def last_seq(self, filter_subject: str) -> int:
        return await _follow.last_seq(self.js, filter_subject)
