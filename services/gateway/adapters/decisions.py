"""Billing's decisions as they are broadcast: one core subscription per gateway process.

A create used to open a JetStream ordered consumer per request to learn whether it was
accepted (docs/bench.md: a consumer-create round trip each time, and the stream's consumer
cap refusing creates past ~1,000 in 30 s). Instead the gateway listens once on
`mma.evt.*.accepted` and `mma.evt.*.rejected` and resolves the future a request registered
for its generation id before publishing its command (the gateway picks the id, so the
decision can never arrive before someone waits for it).

A broadcast can reach the gateway a moment BEFORE the stream has stored the message (NATS
hands a publish to core subscribers and to the stream's ingest at the same time), so a client
that asks for its brand-new generation at once may find nothing stored yet. `recently_decided`
remembers the ids decided lately, so the readers wait for the store instead of answering
"unknown generation" (`wait_until_stored`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict

from libs.bus import Bus
from libs.schemas import BusMessage, GenerationAccepted, GenerationRejected
from services.gateway.adapters.fanout import Fanout

DECISION_SUBJECTS = ("mma.evt.*.accepted", "mma.evt.*.rejected")
RECENT = 50_000  # decided ids remembered (a few minutes of creates at the bench's peak rate)
STORE_WAIT_S = 2.0  # how long a reader waits for a decided generation's first stored event

Decision = GenerationAccepted | GenerationRejected


class Decisions:
    """Futures of pending creates keyed by generation id, resolved by the broadcast."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[Decision]] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()
        self.is_listening = False

    async def start(self, bus: Bus) -> None:
        """Subscribe once, when the gateway starts; until then creates fall back to the replay."""
        if self.is_listening:
            return
        for subject in DECISION_SUBJECTS:
            await bus.listen(subject, self._on_decision)
        self.is_listening = True

    def _on_decision(self, msg: BusMessage) -> None:
        if not isinstance(msg, GenerationAccepted | GenerationRejected):
            return
        self._recent[msg.generation_id] = None
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)
        future = self._waiting.get(msg.generation_id)
        if future is not None and not future.done():
            future.set_result(msg)

    def expect(self, generation_id: str) -> asyncio.Future[Decision]:
        """A future for `generation_id`'s decision; register it before publishing the command, and
        `forget` it once done with it (in a `finally`: a plain pair, cheaper than a context manager)."""
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiting[generation_id] = future
        return future

    def forget(self, generation_id: str, future: asyncio.Future[Decision]) -> None:
        if self._waiting.get(generation_id) is future:
            del self._waiting[generation_id]
        future.cancel()

    @property
    def pending(self) -> int:
        return len(self._waiting)

    def recently_decided(self, generation_id: str) -> bool:
        return generation_id in self._recent

    def settled(self, generation_id: str) -> None:
        """Its events are stored: later reads need not wait."""
        self._recent.pop(generation_id, None)


async def wait_until_stored(fanout: Fanout, decisions: Decisions, generation_id: str,
                            timeout_s: float = STORE_WAIT_S) -> None:
    """For a generation this gateway saw decided: return once the stream holds its first event
    (at once when it already does, or for ids never decided here)."""
    if not decisions.recently_decided(generation_id):
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout_s):
            async with contextlib.aclosing(fanout.follow(generation_id)) as events:
                await anext(events)
            decisions.settled(generation_id)
