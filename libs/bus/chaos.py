"""Fault injection for the fault suite, chosen when the bus is built so `Publisher.publish` has no test branch.

`chaos_duplicate_publish` (MMA_CHAOS_DUPLICATE_PUBLISH) is the only switch: the suite starts the
services with it and they build their bus with `DuplicatingPublisher`. Nothing here runs otherwise.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from nats.js import api

from libs.bus.acks import Outgoing
from libs.bus.codec import MSG_ID_HEADER, encode
from libs.bus.publish import PUBLISH_TIMEOUT_S, Publisher
from libs.schemas import BusMessage
from libs.settings import Settings


class DuplicatingPublisher(Publisher):
    """Stores every message a second time under `<msg id>:dup`, which the server's dedupe lets through,
    so every consumer really handles every message twice; effects must still happen once."""

    async def publish(self, msg: BusMessage, attempts_s: float = 60.0) -> api.PubAck:
        ack = await super().publish(msg, attempts_s)
        if not ack.duplicate:  # a retry of a stored message was doubled the first time
            payload, headers = encode(msg)
            await self.js.publish(msg.subject(), payload, headers={**headers, MSG_ID_HEADER: f"{msg.msg_id()}:dup"},
                                  timeout=PUBLISH_TIMEOUT_S)
        return ack

    async def publish_all(self, messages: Sequence[BusMessage], encoded: Sequence[Outgoing] | None = None) -> None:
        """Each message through `publish` (so each is doubled), awaited together."""
        results = await asyncio.gather(*(self.publish(m) for m in messages), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result


def publisher_type(settings: Settings) -> type[Publisher]:
    """The publisher a bus with these settings writes through."""
    return DuplicatingPublisher if settings.chaos_duplicate_publish else Publisher
