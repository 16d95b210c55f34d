"""What the SSE fan-out hands one follower of a generation (`services.gateway.adapters.fanout`)."""

from __future__ import annotations

import asyncio
import math

from libs.schemas import BusMessage

MAX_BACKLOG = 5000  # undelivered events one watch holds before it gives up (a reader that stopped reading)


class Delivery:
    """One stored event handed to the watches of its generation; `sse` caches its encoding (once per event,
    however many streams write it)."""

    __slots__ = ("msg", "seq", "sse")

    def __init__(self, seq: int, msg: BusMessage) -> None:
        self.seq = seq
        self.msg = msg
        self.sse: bytes | None = None


class Watch:
    """What one follower of a generation gets: the deliveries since it last asked, in stream order, once."""

    __slots__ = ("_items", "_waiter", "closed", "deadline", "generation_id", "last", "overflowed")

    def __init__(self, generation_id: str) -> None:
        self.generation_id = generation_id
        self._items: list[Delivery] = []
        self._waiter: asyncio.Future[None] | None = None
        self.last = 0  # the newest sequence handed out
        self.closed = False
        self.overflowed = False
        self.deadline = math.inf  # monotonic time of the wake-up it asked for (`Fanout` ticker)

    def put(self, delivery: Delivery) -> None:
        if self.closed:
            return
        self._items.append(delivery)
        if len(self._items) > MAX_BACKLOG:
            self.overflowed = True
            self.closed = True
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """The reader went away: `next` answers None from now on."""
        self.closed = True
        self.wake()

    async def next(self) -> list[Delivery] | None:
        """What arrived since the last call, past `last` ([] for a bare wake-up); None once closed."""
        if not self._items and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self.closed:
            return None
        items, self._items = self._items, []
        fresh = [d for d in items if d.seq > self.last]
        if fresh:
            self.last = fresh[-1].seq
        return fresh
