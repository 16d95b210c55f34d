"""What JetStream R3 costs: publish acks on one node at R1 (`make up`) vs a 3-node cluster at R3 (production).

A throwaway single nats-server and a throwaway embedded cluster (libs/devcluster.py), both on file
storage; the same 1 KB messages published awaited one at a time (a handler's publish: the ack
comes once a quorum stored it) and pipelined (256 in flight). No target: for the runbook.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import nats
import nats.js.errors
from nats.js import JetStreamContext, api

from bench.common import Figure, pct
from libs.bus.connection import server_list
from libs.devcluster import NatsCluster
from libs.devinfra import NatsServer

PAYLOAD = b"x" * 1024
WINDOW = 256


async def _stream_led(js: JetStreamContext, name: str, timeout_s: float = 30.0) -> None:
    """Wait until the stream has a leader: a new R3 stream answers its first publish only after an election
    (before it, the publish finds no responder)."""
    async with asyncio.timeout(timeout_s):
        while True:
            info = await js.stream_info(name)
            if info.cluster is None or info.cluster.leader:
                return
            await asyncio.sleep(0.05)


async def _first_answer(js: JetStreamContext, timeout_s: float = 30.0) -> None:
    """Publish until the stream answers: a leader just elected may still refuse the first publishes (no
    responder) while its peers catch up, which once failed a whole `make bench` here."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                await js.publish("rep.warm", PAYLOAD)
                return
            except nats.js.errors.NoStreamResponseError:
                await asyncio.sleep(0.05)


async def _measure(url: str, replicas: int, count: int, cap_s: float) -> tuple[float, float, float]:
    """(awaited msgs/s, awaited p99 ms, pipelined msgs/s), each run bounded by `count` and `cap_s`."""
    nc = await nats.connect(server_list(url))
    js = nc.jetstream()
    await js.add_stream(api.StreamConfig(name="REP", subjects=["rep.>"], storage=api.StorageType.FILE,
                                         num_replicas=replicas))
    await _stream_led(js, "REP")
    await _first_answer(js)
    try:
        latencies: list[float] = []
        started = time.perf_counter()
        while len(latencies) < count and time.perf_counter() - started < cap_s:
            sent = time.perf_counter()
            await js.publish("rep.a", PAYLOAD)
            latencies.append(time.perf_counter() - sent)
        awaited = len(latencies) / (time.perf_counter() - started)
        started, n = time.perf_counter(), 0
        while n < count * 4 and time.perf_counter() - started < cap_s:
            await asyncio.gather(*(js.publish("rep.b", PAYLOAD) for _ in range(WINDOW)))
            n += WINDOW
        pipelined = n / (time.perf_counter() - started)
    finally:
        await nc.close()
    return awaited, pct(latencies, 99) * 1000, pipelined


async def run(root: Path, count: int, cap_s: float) -> Figure:
    single = NatsServer(root / "nats-r1").start()
    try:
        r1 = await _measure(single.url, 1, count, cap_s)
    finally:
        single.kill()
    cluster = NatsCluster(root / "nats-r3").start()
    try:
        r3 = await _measure(cluster.url, 3, count, cap_s)
    finally:
        cluster.kill()
    text = (f"JetStream publish, 3-node cluster R3 vs one node R1: awaited one at a time {r3[0]:,.0f} vs "
            f"{r1[0]:,.0f} msg/s ({r3[0] / r1[0]:.2f}x, p99 {r3[1]:.2f} vs {r1[1]:.2f} ms), pipelined x{WINDOW} "
            f"{r3[2]:,.0f} vs {r1[2]:,.0f} msg/s ({r3[2] / r1[2]:.2f}x); 1 KB messages, file storage, loopback")
    return Figure("replicas", text)
