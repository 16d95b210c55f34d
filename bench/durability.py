"""Durability cost: JetStream publish throughput with `sync_interval: always` (fsync per write) vs default.

Two throwaway nats-servers on file storage; the same 1 KB messages published awaited
one at a time (a handler's publish) and pipelined (256 in flight). For the runbook.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
from nats.js import api

from bench.common import Figure
from libs.devinfra import NatsServer

PAYLOAD = b"x" * 1024
WINDOW = 256


async def _measure(url: str, count: int, cap_s: float) -> tuple[float, float]:
    """(awaited msgs/s, pipelined msgs/s), each bounded by `count` and `cap_s`."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(api.StreamConfig(name="DUR", subjects=["dur.>"], storage=api.StorageType.FILE))
    try:
        started, n = time.perf_counter(), 0
        while n < count and time.perf_counter() - started < cap_s:
            await js.publish("dur.a", PAYLOAD)
            n += 1
        awaited = n / (time.perf_counter() - started)
        started, n = time.perf_counter(), 0
        while n < count * 4 and time.perf_counter() - started < cap_s:
            await asyncio.gather(*(js.publish("dur.b", PAYLOAD) for _ in range(WINDOW)))
            n += WINDOW
        pipelined = n / (time.perf_counter() - started)
    finally:
        await nc.close()
    return awaited, pipelined


async def run(root: Path, count: int, cap_s: float) -> Figure:
    results = {}
    for label, sync in (("default", None), ("always", "always")):
        server = NatsServer(root / f"nats-sync-{label}", sync_interval=sync).start()
        try:
            results[label] = await _measure(server.url, count, cap_s)
        finally:
            server.kill()
    (d_aw, d_pipe), (a_aw, a_pipe) = results["default"], results["always"]
    text = (f"JetStream publish, sync_interval always vs default: awaited one at a time {a_aw:,.0f} vs "
            f"{d_aw:,.0f} msg/s ({a_aw / d_aw:.2f}x), pipelined x{WINDOW} {a_pipe:,.0f} vs {d_pipe:,.0f} msg/s "
            f"({a_pipe / d_pipe:.2f}x); 1 KB messages, file storage")
    return Figure("durability", text)
