"""Billing's decisions as they are broadcast: one core subscription per gateway process.

A create used to open a JetStream ordered consumer per request to learn whether it was
accepted (docs/bench.md: a consumer-create round trip each time, and the stream's consumer
cap refusing creates past ~1,000 in 30 s). Instead the gateway listens once on
`mma.evt.*.accepted` and `mma.evt.*.rejected` and resolves the future a request registered
for its generation id before publishing its command (the gateway picks the id, so the
decision can never arrive before someone waits for it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager

from libs.bus import Bus
from libs.schemas import BusMessage, GenerationAccepted, GenerationRejected

DECISION_SUBJECTS = ("mma.evt.*.accepted", "mma.evt.*.rejected")

Decision = GenerationAccepted | GenerationRejected


class Decisions:
    """Futures of pending creates keyed by generation id, resolved by the broadcast."""

    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[Decision]] = {}
        self.is_listening = False

    async def start(self, bus: Bus) -> None:
        """Subscribe once, when the gateway starts; until then creates fall back to the replay."""
        if self.is_listening:
            return
        for subject in DECISION_SUBJECTS:
            await bus.listen(subject, self._on_decision)
        self.is_listening = True

    async def _on_decision(self, msg: BusMessage) -> None:
        if not isinstance(msg, GenerationAccepted | GenerationRejected):
            return
        future = self._waiting.get(msg.generation_id)
        if future is not None and not future.done():
            future.set_result(msg)

    @contextmanager
    def expect(self, generation_id: str) -> Iterator[asyncio.Future[Decision]]:
        """A future for `generation_id`'s decision; register it before publishing the command."""
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._waiting[generation_id] = future
        try:
            yield future
        finally:
            if self._waiting.get(generation_id) is future:
                del self._waiting[generation_id]
            future.cancel()

    @property
    def pending(self) -> int:
        return len(self._waiting)
