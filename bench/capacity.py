"""In-flight capacity: N still creates at once on ONE pipeline process, each provider call taking 5 s.

Commands go on the bus as the gateway sends them (billing debits, the pipeline runs);
the bench watches the generations' status/done/failed events to count how many are
in flight at once, and samples the pipeline's RSS. N grows until a round fails or
the time cap is reached. The provider timeout is raised so no step can time out.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from bench.common import Figure, connect, pass_id
from bench.stack import Stack
from libs.schemas import Flow, GenerationRequest, GenerationRequested, Inputs

LATENCY_MS = 5000
MB = 1024 * 1024


async def run(stack: Stack, sizes: list[int], cap_s: float, round_timeout_s: float) -> Figure:
    stack.start("pipeline", offline_latency_ms=LATENCY_MS, provider_timeout_s=600)
    bus = await connect(stack.nats_url, "bench-capacity")
    started_ids: set[str] = set()
    finished: dict[str, str] = {}

    async def on_event(msg: object) -> None:
        subject = msg.subject  # type: ignore[attr-defined]
        parts = subject.split(".")
        if len(parts) != 4:
            return
        gid, kind = parts[2], parts[3]
        if kind == "status":
            started_ids.add(gid)
        elif kind in ("done", "failed"):
            finished[gid] = kind

    subs = [await bus.nc.subscribe(f"mma.evt.*.{k}", cb=on_event) for k in ("status", "done", "failed")]
    rounds: list[str] = []
    best, best_rss, failed_total = 0, 0, 0
    began = time.monotonic()
    try:
        for n in sizes:
            if time.monotonic() - began > cap_s:
                rounds.append(f"N={n} skipped (time cap {cap_s:.0f}s)")
                break
            ids = [uuid.uuid4().hex for _ in range(n)]
            mine = set(ids)
            stack.rss.reset_window()
            request = GenerationRequest(inputs=Inputs(user_brief="a red glass bottle on a marble plinth"))
            commands = [GenerationRequested(generation_id=g, pass_id=pass_id(i % 1000), flow=Flow.STILL_CREATE,
                                            request=request) for i, g in enumerate(ids)]
            t0 = time.monotonic()
            for i in range(0, n, 256):
                await asyncio.gather(*(bus.publish(c) for c in commands[i:i + 256]))
            peak, peak_at = 0, 0.0
            while time.monotonic() - t0 < round_timeout_s:
                now_started = len(mine & started_ids)
                now_finished = sum(1 for g in ids if g in finished)
                in_flight = now_started - now_finished
                if in_flight > peak:
                    peak, peak_at = in_flight, time.monotonic() - t0
                if now_finished == n:
                    break
                await asyncio.sleep(0.2)
            elapsed = time.monotonic() - t0
            stack.rss.sample()
            rss = stack.rss.window.get("pipeline", 0)
            done = sum(1 for g in ids if finished.get(g) == "done")
            failed = sum(1 for g in ids if finished.get(g) == "failed")
            failed_total += failed
            ok = done == n and peak >= 0.9 * n and rss < 300 * MB
            rounds.append(f"N={n}: peak {peak} in flight at {peak_at:.0f}s, {done} done, {failed} failed, "
                          f"{elapsed:.0f}s, RSS {rss / MB:.0f} MB")
            if not ok:
                break
            best, best_rss = n, rss
    finally:
        for sub in subs:
            await sub.unsubscribe()
        await bus.close()
        stack.stop("pipeline")
    met = best >= 1000 and best_rss < 300 * MB and failed_total == 0
    why = "" if met else (f"largest clean round N={best}" + (f", {failed_total} failed" if failed_total else ""))
    text = (f"{best} generations in flight on one pipeline process (provider 5 s per call), RSS "
            f"{best_rss / MB:.0f} MB [{'; '.join(rounds)}] (target >= 1000, RSS < 300 MB, no timeout)")
    return Figure("in-flight capacity", text, met, why)
