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
subject as reply, as from nats-py's fetch. At most one request is open per fetcher, so no more
than its batch is ever on the way: when its answer does not come (NATS restarted and lost it),
it is given up `expires` plus a margin after it was sent; a message that still arrives for it
waits in the list for the next fetch.
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

from libs.bus.inline import subscribe_inline

log = structlog.get_logger("bus")

STATUS = api.Header.STATUS.value
HEARTBEAT = "100"
ENDED = frozenset({"404", "408"})  # no (more) messages; the request expired
LOST_MARGIN_S = 1.0  # past `expires`, an unanswered request is taken as lost
MIN_EXPIRES_NS = 1_000_000  # the shortest expiry a request is sent with


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
        self.left = 0  # messages the open request may still bring
        self.lost_at = 0.0  # when the open request, unanswered, is taken as lost (loop time)
        self.ended = ""  # the status that ended the last request ("" for a full batch, or none yet)
        self.waiter: asyncio.Future[None] | None = None  # resolved on a message, or on a request's end

    async def start(self) -> None:
        self.prefix = self.nc.new_inbox() + "."
        self.sub = await subscribe_inline(self.nc, self.prefix + "*", self._on_msg)  # handled as it is read

    async def stop(self) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()
            self.sub = None

    def _on_msg(self, raw: Msg) -> None:
        headers = raw.headers
        status = headers.get(STATUS) if headers else None
        if status is None:
            self.got.append(raw)
            self.left -= 1
            if self.left <= 0:
                self.open, self.ended = "", ""  # a full batch: the server sends no status
            self._wake()
            return
        if status == HEARTBEAT or raw.subject != self.open:
            return  # a heartbeat, or the end of an abandoned request
        if status not in ENDED:
            log.warning("bus.fetch_status", durable=self.durable, status=status,
                        description=headers.get(api.Header.DESCRIPTION.value) if headers else None)
        self.open, self.ended = "", status
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self, size: int) -> list[Msg]:
        """Up to `size` of the messages already here (none when there are none)."""
        got = self.got
        if len(got) <= size:
            self.got = []
            return got
        self.got = got[size:]
        return got[:size]

    async def fetch(self, size: int, wait_s: float, linger: bool = False) -> tuple[list[Msg], str]:
        """Up to `size` messages, as soon as there are any, waiting up to `wait_s` for the first; with the
        status that ended the request ("" while it is open, when its batch filled, or its answer was lost).

        One request is open at a time; a new one is sent only when none is. Without `linger` it is a
        no-wait one, ended by the server once what is there is delivered. With `linger` it stays open
        (up to `size` messages, or `wait_s`), so what comes while the caller works waits here, in hand
        for its next call without a round trip (`take`).
        """
        if self.got:
            return self.take(size), ""
        loop = asyncio.get_running_loop()
        if self.open and loop.time() > self.lost_at:
            log.warning("bus.fetch_unanswered", durable=self.durable, wait_s=wait_s)
            self.open = ""
        if not self.open:
            await self._ask(size, wait_s, linger)
        await self._wait(self.lost_at)
        return self.take(size), "" if self.open else self.ended

    async def gather(self, size: int, until: float) -> None:
        """Wait until `size` messages are here, or until loop time `until` (a busy consumer waiting for a
        fuller batch), asking for what no open request will bring."""
        loop = asyncio.get_running_loop()
        while len(self.got) < size and loop.time() < until:
            if not self.open:
                await self._ask(size - len(self.got), until - loop.time(), linger=True)
            if not await self._wait(min(until, self.lost_at)):
                return

    async def _ask(self, size: int, wait_s: float, linger: bool) -> None:
        """One `CONSUMER.MSG.NEXT` request for up to `size` messages within `wait_s`."""
        loop = asyncio.get_running_loop()
        reply = f"{self.prefix}{next(self.tokens)}"
        request: dict[str, object] = {"batch": size, "expires": max(int(wait_s * 1e9), MIN_EXPIRES_NS)}
        if not linger:
            request["no_wait"] = True
        await self.nc.publish(self.subject, orjson.dumps(request), reply=reply)
        self.open, self.left, self.ended = reply, size, ""
        self.lost_at = loop.time() + wait_s + LOST_MARGIN_S

    async def _wait(self, until: float) -> bool:
        """Until a message or a request's end wakes this fetcher (True), or loop time `until` (False)."""
        self.waiter = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout_at(until):
                await self.waiter
            return True
        except TimeoutError:
            return False  # `until` passed (for `fetch`, its request is taken as lost by the next call)
        finally:
            self.waiter = None
