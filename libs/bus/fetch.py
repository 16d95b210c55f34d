"""Fetches from a durable pull consumer into one inbox subscription, a request per fetch.

nats-py's `PullSubscription.fetch` waits for each message with `next_msg` (a uuid, a future and an
`asyncio.wait_for` per message) and, when the first no-wait probe finds nothing, sends a second,
lingering request. Here every fetch is ONE `CONSUMER.MSG.NEXT` request `{"batch", "expires",
"no_wait"}`: the server answers at once with what is there, or as soon as something comes within
`expires`, and ends the request with a `404 No Messages` status after a partial batch (nothing
when the batch is full), or `408 Request Timeout` when nothing came. Messages arrive through a
subscription callback that appends them to a list; the fetch waits on one future.

Each request's reply subject is `<inbox>.<n>`, so a status names the request it ends (a late
status of an abandoned request ends nothing). Messages carry their own subject and the ack
subject as reply, as from nats-py's fetch. At most one request is open per fetcher: when its
answer does not come (NATS restarted and lost it), the fetch gives up after `expires` plus a
margin; a message that still arrives for it waits in the list for the next fetch.
"""

from __future__ import annotations

import asyncio
import itertools

import orjson
import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import api

log = structlog.get_logger("bus")

STATUS = api.Header.STATUS.value
HEARTBEAT = "100"
ENDED = frozenset({"404", "408"})  # no (more) messages; the request expired
LOST_MARGIN_S = 1.0  # past `expires`, an unanswered request is taken as lost


class Fetcher:
    """One durable's fetches (`fetch`) over one inbox subscription (`start`, `stop`)."""

    def __init__(self, nc: NatsClient, stream: str, durable: str) -> None:
        self.nc = nc
        self.durable = durable
        self.subject = f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"
        self.prefix = ""
        self.sub: Subscription | None = None
        self.got: list[Msg] = []
        self.tokens = itertools.count(1)
        self.open = ""  # the reply subject of the request in progress ("" for none)
        self.want = 0  # messages that end the open request (its batch, less what the list held)
        self.waiter: asyncio.Future[str] | None = None  # resolved with the ending status ("" for a full batch)

    async def start(self) -> None:
        self.prefix = self.nc.new_inbox() + "."
        self.sub = await self.nc.subscribe(self.prefix + "*", cb=self._on_msg)

    async def stop(self) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()
            self.sub = None

    async def _on_msg(self, raw: Msg) -> None:
        headers = raw.headers
        status = headers.get(STATUS) if headers else None
        if status is None:
            self.got.append(raw)
            if len(self.got) >= self.want:
                self._end("")
            return
        if status == HEARTBEAT or raw.subject != self.open:
            return  # a heartbeat, or the end of an abandoned request
        if status not in ENDED:
            log.warning("bus.fetch_status", durable=self.durable, status=status,
                        description=headers.get(api.Header.DESCRIPTION.value) if headers else None)
        self._end(status)

    def _end(self, status: str) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(status)

    def _take(self, size: int) -> list[Msg]:
        got = self.got
        if len(got) <= size:
            self.got = []
            return got
        self.got = got[size:]
        return got[:size]

    async def fetch(self, size: int, wait_s: float) -> tuple[list[Msg], str]:
        """Up to `size` messages, waiting up to `wait_s` for the first; with the status that ended the
        request ("" when the batch filled, or messages were already in hand, or the answer was lost)."""
        if self.got:
            return self._take(size), ""
        nc = self.nc
        self.open = f"{self.prefix}{next(self.tokens)}"
        self.want = size
        loop = asyncio.get_running_loop()
        self.waiter = loop.create_future()
        request = orjson.dumps({"batch": size, "expires": int(wait_s * 1e9), "no_wait": True})
        status = ""
        try:
            await nc.publish(self.subject, request, reply=self.open)
            status = await asyncio.wait_for(self.waiter, wait_s + LOST_MARGIN_S)
        except TimeoutError:
            log.warning("bus.fetch_unanswered", durable=self.durable, wait_s=wait_s)
        finally:
            self.open = ""
            self.waiter = None
        return self._take(size), status
