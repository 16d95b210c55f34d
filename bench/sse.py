"""SSE fan-out: N concurrent `/mma/stream/<id>` clients on one gateway, each receiving every line.

The bench plays billing and the pipeline: it publishes each generation's events on EVENTS
with the real schemas - `accepted` and a `scanning` status before the clients connect (so
each stream opens with a replay, as a browser does after its create), then K scan lines at
random times over a window, then `done`. Each scan line carries its publish time (`t=`),
taken just before the publish; the client processes (`bench.sse_client`: raw asyncio
protocols on uvloop, several processes) take the arrival time of the socket read that
carried it: the delay is publish -> line in the client's socket buffer.

Memory per stream: the gateway's RSS with every stream open minus its RSS just before.
"""

from __future__ import annotations

import asyncio
import random
import resource
import sys
import time
import uuid
from pathlib import Path

import orjson
import psutil

from bench.common import Figure, children_cpu_delta_last, connect, pct
from bench.stack import ROOT, Stack, describe_errors, errors_since, log_offset
from libs.bus import Bus
from libs.schemas import BusMessage, Flow, GenerationAccepted, GenerationDone, MmaStatus, ScanLine, StatusChanged

TARGET_STREAMS = 10_000
TARGET_P99_MS = 250.0
KB = 1024


async def _publish_all(bus: Bus, messages: list[BusMessage]) -> None:
    for i in range(0, len(messages), 256):
        await asyncio.gather(*(bus.publish(m) for m in messages[i:i + 256]))


def _rss(stack: Stack) -> int:
    return int(psutil.Process(stack.pid("gateway")).memory_info().rss)


async def _publish_line(bus: Bus, generation_id: str, pass_id: str, index: int) -> None:
    """One scan line stamped right before its own publish (not its chunk's: the lines before it in a chunk
    are encoded and sent first), so neither a lagging publisher nor a long chunk adds to the delay."""
    await bus.publish(ScanLine(generation_id=generation_id, pass_id=pass_id, index=index, text=f"t={time.time():.6f}"))


async def _live(bus: Bus, ids: list[str], owner: dict[str, str], lines: int, window_s: float) -> float:
    """K lines per generation at random times in the window; the worst publisher lag (s)."""
    rng = random.Random(7)
    schedule = sorted((rng.uniform(0, window_s), g, k) for g in ids for k in range(lines))
    started = time.monotonic()
    index, lag = 0, 0.0
    while index < len(schedule):
        now = time.monotonic() - started
        due: list[tuple[str, int]] = []
        while index < len(schedule) and schedule[index][0] <= now:
            _, g, k = schedule[index]
            due.append((g, k))
            lag = max(lag, now - schedule[index][0])
            index += 1
        for i in range(0, len(due), 256):
            await asyncio.gather(*(_publish_line(bus, g, owner[g], k) for g, k in due[i:i + 256]))
        await asyncio.sleep(0.005)
    return lag


async def run(stack: Stack, streams: int, lines: int, window_s: float, clients: int, root: Path) -> Figure:
    bus = await connect(stack.nats_url, "bench-sse")
    ids = [uuid.uuid4().hex for _ in range(streams)]
    owner = {g: f"pass:anon:bench-sse:{i % 100}" for i, g in enumerate(ids)}
    gen_file = root / "sse-ids.txt"
    gen_file.write_text("\n".join(ids))
    timeout_s = window_s + 120
    offset = log_offset(stack, "gateway")
    try:
        await _publish_all(bus, [GenerationAccepted(generation_id=g, pass_id=owner[g], flow=Flow.STILL_CREATE,
                                                    price=1, balance=100) for g in ids])
        await _publish_all(bus, [StatusChanged(generation_id=g, pass_id=owner[g], status=MmaStatus.SCANNING)
                                 for g in ids])
        rss_before = _rss(stack)
        children_cpu_delta_last()
        cpu_start = stack.cpu_seconds()
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
        rss_open = _rss(stack)
        cpu_before = stack.cpu_seconds()
        connect_ms = 1000 * (cpu_before.get("gateway", 0.0) - cpu_start.get("gateway", 0.0)) / max(1, streams)
        live_started = time.monotonic()
        lag = await _live(bus, ids, owner, lines, window_s)
        await asyncio.sleep(1.0)
        live_s = time.monotonic() - live_started
        cpu_live = {k: v - cpu_before.get(k, 0.0) for k, v in stack.cpu_seconds().items()}
        await _publish_all(bus, [GenerationDone(generation_id=g, pass_id=owner[g], vars={}) for g in ids])
        summaries = []
        for proc in procs:
            assert proc.stdout is not None
            out = await asyncio.wait_for(proc.stdout.read(), timeout_s)
            await proc.wait()
            summaries.append(orjson.loads(out.strip().splitlines()[-1]))
        client_cpu = children_cpu_delta_last()
        wall = time.monotonic() - connect_started
    finally:
        await bus.close()
    delays = [d for s in summaries for d in s["delays"]]
    delivered = sum(s["lines"] for s in summaries)
    done = sum(s["done"] for s in summaries)
    complete = sum(s["per_stream"].get(str(lines), 0) for s in summaries)
    expected = streams * lines
    p50, p99, worst = pct(delays, 50) * 1000, pct(delays, 99) * 1000, max(delays, default=0.0) * 1000
    all_there = connected == streams and delivered == expected and complete == streams and done == streams
    met = streams >= TARGET_STREAMS and all_there and p99 < TARGET_P99_MS
    why = []
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and soft < streams + 1024:
        why.append(f"the open-files limit ({soft}) is below {streams} streams + 1024: raise `ulimit -n` (hard)")
    if streams < TARGET_STREAMS:
        why.append(f"only {streams} streams tried (a quick run)")
    if not all_there:
        why.append(f"{connected}/{streams} connected, {delivered}/{expected} lines, {complete} streams with all "
                   f"{lines}, {done} done")
    logged = describe_errors(errors_since(stack, "gateway", offset))
    if logged:
        why.append(logged)
    refusals: dict[str, int] = {}
    for s in summaries:
        for reason, n in s["failures"].items():
            refusals[reason] = refusals.get(reason, 0) + n
    if refusals:
        top = max(refusals, key=lambda k: refusals[k])
        why.append(f"{sum(refusals.values())} streams failed, e.g. {top[:160]!r}")
    if not p99 < TARGET_P99_MS:
        why.append(f"p99 {p99:.0f} ms >= {TARGET_P99_MS:.0f}")
    rate = expected / window_s
    per_stream_kb = (rss_open - rss_before) / max(1, connected) / KB
    busy = ", ".join(f"{name} {100 * cpu_live[name] / live_s:.0f}%"
                     for name in ("gateway", "nats-server", "ledger", "postgres") if name in cpu_live)
    text = (f"{connected:,}/{streams:,} streams, {delivered:,}/{expected:,} lines delivered, {done:,} closed on done, "
            f"delay publish->client p50 {p50:.0f} ms p99 {p99:.0f} ms max {worst:.0f} ms at {rate:,.0f} lines/s; "
            f"all connected in {connect_s:.1f} s (gateway CPU {connect_ms:.2f} ms per stream opened); "
            f"gateway {per_stream_kb:.1f} KB per open stream "
            f"(RSS {rss_before / KB / KB:.0f} -> {rss_open / KB / KB:.0f} MB); CPU while live (of one core): {busy}, "
            f"{clients} client processes {100 * client_cpu / wall:.0f}% over the run; publisher lag "
            f"{lag * 1000:.0f} ms (target >= {TARGET_STREAMS:,} streams, all lines, p99 < {TARGET_P99_MS:.0f} ms)")
    return Figure("SSE fan-out", text, met, ", ".join(why))
