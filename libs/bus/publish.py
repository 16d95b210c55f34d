"""Typed publish to JetStream: each model on its own subject under its deterministic msg id.

A retry inside the dedupe window is dropped by the server (the ack says duplicate), so retrying
after a lost ack never doubles a message. Publishes go through the connection's `AckMux`
(acks.py): a batch is written in one buffer and its acks awaited together.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog
from nats.js import JetStreamContext, api

from libs.bus.acks import AckMux, Outgoing, header_block, mux_for
from libs.bus.codec import encode
from libs.bus.retry import retried
from libs.errors import ServiceUnavailableError
from libs.schemas import BusMessage
from libs.transient import NATS_AWAY

log = structlog.get_logger("bus")

PUBLISH_TIMEOUT_S = 5.0


def outgoing(msg: BusMessage) -> Outgoing:
    payload, headers = encode(msg)
    return Outgoing(msg.subject(), header_block(headers), payload)


def _first_ack(results: list[api.PubAck | BaseException]) -> api.PubAck:
    result = results[0]
    if isinstance(result, BaseException):
        raise result
    return result


class Publisher:
    """Writes bus messages to one JetStream context."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js
        self.mux: AckMux = mux_for(js._nc)

    async def publish(self, msg: BusMessage, attempts_s: float = 60.0) -> api.PubAck:
        """Publish with the model's subject and msg id; retried while NATS is away (0.1 s doubling to 2 s,
        for up to `attempts_s`), then ServiceUnavailableError."""
        return await self._publish(outgoing(msg), attempts_s)

    async def _publish(self, item: Outgoing, attempts_s: float) -> api.PubAck:
        def away(exc: Exception) -> bool:
            if not isinstance(exc, NATS_AWAY):
                return False
            log.warning("bus.publish_retry", subject=item.subject, error=repr(exc))
            return True

        async def once() -> api.PubAck:
            return _first_ack(await self.mux.publish((item,), PUBLISH_TIMEOUT_S))

        try:
            ack = await retried(once, on=away, timeout_s=attempts_s, wait_s=0.1, wait_max_s=2.0)
        except NATS_AWAY as exc:
            raise ServiceUnavailableError("bus publish failed", subject=item.subject) from exc
        if ack.duplicate:
            log.debug("bus.publish_duplicate", subject=item.subject, stream_seq=ack.seq)
        return ack

    async def publish_all(self, messages: Sequence[BusMessage], encoded: Sequence[Outgoing] | None = None) -> None:
        """Publish pipelined: every message is written to the connection, in order, in one buffer
        (stream order is list order), then the acks are awaited together. A message whose publish
        failed while NATS was away is published again on its own, with `publish`'s retries; all are
        awaited even when one fails, then the first error is raised. `encoded`: the messages as
        `outgoing` made them already (the caller kept the bytes)."""
        if not messages:
            return
        items = list(encoded) if encoded is not None else [outgoing(m) for m in messages]
        try:
            results = await self.mux.publish(items, PUBLISH_TIMEOUT_S)
        except NATS_AWAY as exc:
            results = [exc] * len(items)
        first: BaseException | None = None
        for item, result in zip(items, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            try:
                if not isinstance(result, NATS_AWAY):
                    raise result
                await self._publish(item, 60.0)
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first

    async def store(self, items: Sequence[Outgoing], timeout: float = PUBLISH_TIMEOUT_S) -> list[api.PubAck]:
        """Raw JetStream writes (KV puts and purges are publishes to `$KV.<bucket>.<key>`), pipelined like
        `publish_all`, without retries: the first failure is raised once all are answered."""
        results = await self.mux.publish(items, timeout)
        acks: list[api.PubAck] = []
        for result in results:
            if isinstance(result, BaseException):
                raise result
            acks.append(result)
        return acks

    async def publish_raw(self, subject: str, data: bytes, headers: dict[str, str] | None = None) -> None:
        """Publish bytes as they are (tests, tools); production code uses `publish`."""
        await self.js.publish(subject, data, headers=headers)
