"""SSE fan-out: N concurrent `/mma/stream/<id>` clients on one gateway, each receiving every line.

The bench plays the pipeline: it publishes each generation's events on EVENTS with
the real schemas (a `queued` status first, then K scan lines spread over a window,
then `done`). Each scan line carries its publish time, so the client processes (raw
sockets, several of them) measure publish -> arrival delay on the same clock.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
import uuid
from pathlib import Path

import orjson

from bench.common import Figure, children_cpu_delta_last, connect, pct
from bench.stack import ROOT, Stack, describe_errors, errors_since, log_offset
from libs.schemas import GenerationDone, MmaStatus, ScanLine, StatusChanged


async def _publish_all(bus: object, messages: list[object]) -> None:
    from libs.bus import Bus

    assert isinstance(bus, Bus)
    for i in range(0, len(messages), 256):
        await asyncio.gather(*(bus.publish(m) for m in messages[i:i + 256]))  # type: ignore[arg-type]


async def run(stack: Stack, streams: int, lines: int, window_s: float, clients: int, root: Path) -> Figure:
    bus = await connect(stack.nats_url, "bench-sse")
    ids = [uuid.uuid4().hex for _ in range(streams)]
    owner = {g: f"pass:anon:bench-sse:{i % 100}" for i, g in enumerate(ids)}
    gen_file = root / "sse-ids.txt"
    gen_file.write_text("\n".join(ids))
    timeout_s = window_s + 90
    offset = log_offset(stack, "gateway")
    try:
        await _publish_all(bus, [StatusChanged(generation_id=g, pass_id=owner[g], status=MmaStatus.QUEUED)
                                 for g in ids])
        children_cpu_delta_last()
        per = -(-streams // clients)
        procs = [await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.sse_client", str(stack.gateway_port), str(gen_file), str(i * per), str(per),
            str(timeout_s), cwd=ROOT, stdout=asyncio.subprocess.PIPE) for i in range(clients)]
        connected = 0
        connect_started = time.monotonic()
        for proc in procs:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), timeout_s)
            connected += int(line.split()[1]) if line.startswith(b"ready") else 0
        connect_s = time.monotonic() - connect_started
        # the schedule: K lines per generation at random times in the window, then done
        rng = random.Random(7)
        schedule = sorted((rng.uniform(0, window_s), g, k) for g in ids for k in range(lines))
        started = time.monotonic()
        index, lag = 0, 0.0
        while index < len(schedule):
            now = time.monotonic() - started
            batch = []
            while index < len(schedule) and schedule[index][0] <= now:
                _, g, k = schedule[index]
                batch.append(ScanLine(generation_id=g, pass_id=owner[g], index=k, text=f"t={time.time():.6f}"))
                lag = max(lag, now - schedule[index][0])
                index += 1
            if batch:
                await _publish_all(bus, batch)
            await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)
        await _publish_all(bus, [GenerationDone(generation_id=g, pass_id=owner[g], vars={}) for g in ids])
        summaries = []
        for proc in procs:
            assert proc.stdout is not None
            out = await asyncio.wait_for(proc.stdout.read(), timeout_s)
            await proc.wait()
            summaries.append(orjson.loads(out.strip().splitlines()[-1]))
        client_cpu = children_cpu_delta_last()
    finally:
        await bus.close()
    delays = [d for s in summaries for d in s["delays"]]
    delivered = sum(sum(s["lines"]) for s in summaries)
    done = sum(s["done"] for s in summaries)
    expected = streams * lines
    wall = time.monotonic() - connect_started
    p50, p99 = pct(delays, 50) * 1000, pct(delays, 99) * 1000
    met = streams >= 2000 and connected == streams and delivered == expected and done == streams and p99 < 250
    why = []
    if streams < 2000:
        why.append(f"only {streams} streams tried (quick run)")
    if connected != streams or delivered != expected or done != streams:
        why.append(f"{connected}/{streams} connected, {delivered}/{expected} lines, {done} done")
    logged = describe_errors(errors_since(stack, "gateway", offset))
    if logged:
        why.append(logged)
    refusals: dict[str, int] = {}
    for s in summaries:
        for reason, n in s["failures"].items():
            refusals[reason] = refusals.get(reason, 0) + n
    if refusals:
        top = max(refusals, key=lambda k: refusals[k])
        why.append(f"{sum(refusals.values())} streams refused, e.g. {top[:160]!r}")
    if not p99 < 250:
        why.append(f"p99 {p99:.0f} ms >= 250")
    rate = expected / window_s
    text = (f"{connected}/{streams} streams, {delivered}/{expected} lines delivered, {done} closed on done, "
            f"delay p50 {p50:.0f} ms p99 {p99:.0f} ms at {rate:,.0f} lines/s (all connected in {connect_s:.1f} s; "
            f"{clients} client processes, CPU {100 * client_cpu / wall:.0f}% of one core; publisher lag "
            f"{lag * 1000:.0f} ms) (target >= 2000 streams, all lines, p99 < 250 ms)")
    return Figure("SSE fan-out", text, met, ", ".join(why))
