"""A running durable consumer: its fetch loop, the messages it has in hand, what it has done."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass
class Consumer:
    """`stop` finishes the messages in hand, then returns."""

    name: str
    task: asyncio.Task[None] | None = None
    inflight: set[asyncio.Task[None]] = field(default_factory=set)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    fetched: int = 0  # messages the fetch loop has taken from the server
    handled: int = 0
    dead_lettered: int = 0
    in_progress_sent: int = 0  # heartbeats: in-progress acks written for messages in hand

    async def stop(self, grace_s: float = 10.0) -> None:
        self.stopping.set()
        if self.task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                async with asyncio.timeout(grace_s):
                    await asyncio.shield(self.task)
        if self.inflight:
            await asyncio.wait(self.inflight, timeout=grace_s)
        for task in self.inflight:
            task.cancel()
