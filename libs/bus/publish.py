"""Typed publish to JetStream: each model on its own subject under its deterministic msg id.

A retry inside the dedupe window is dropped by the server (the ack says duplicate), so retrying
after a lost ack never doubles a message.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import structlog
from nats.js import JetStreamContext, api

from libs.bus.codec import MSG_ID_HEADER, encode
from libs.bus.retry import retried
from libs.errors import ServiceUnavailableError
from libs.schemas import BusMessage
from libs.transient import NATS_AWAY

log = structlog.get_logger("bus")

PUBLISH_TIMEOUT_S = 5.0


class Publisher:
    """Writes bus messages to one JetStream context."""

    def __init__(self, js: JetStreamContext) -> None:
        self.js = js

    async def publish(self, msg: BusMessage, attempts_s: float = 60.0) -> api.PubAck:
        """Publish with the model's subject and msg id; retried while NATS is away (0.1 s doubling to 2 s,
        for up to `attempts_s`), then ServiceUnavailableError."""
        subject = msg.subject()
        payload, headers = encode(msg)

        def away(exc: Exception) -> bool:
            if not isinstance(exc, NATS_AWAY):
                return False
            log.warning("bus.publish_retry", subject=subject, error=repr(exc))
            return True

        try:
            ack = await retried(lambda: self.js.publish(subject, payload, headers=headers, timeout=PUBLISH_TIMEOUT_S),
                                on=away, timeout_s=attempts_s, wait_s=0.1, wait_max_s=2.0)
        except NATS_AWAY as exc:
            raise ServiceUnavailableError("bus publish failed", subject=subject) from exc
        if ack.duplicate:
            log.debug("bus.publish_duplicate", subject=subject, msg_id=headers[MSG_ID_HEADER], stream_seq=ack.seq)
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
