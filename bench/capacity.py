"""In-flight capacity: N still creates at once on ONE pipeline process, each prediction taking 60 s.

Commands go on the bus as the gateway sends them (billing debits, the pipeline runs), one per
customer (each its own pass id, so the per-customer limit never queues them); the bench watches
the generations' status/done/failed events to count how many are in flight at once (started, not
yet ended), and samples the pipeline's RSS. The offline generator takes `predict_latency_s` per
prediction (a realistic video), every other provider call `CALL_LATENCY_MS`; the provider timeout
is raised so no step can time out. Printed per round: the peak in flight and when it was reached,
how long the round took, RSS, KB per in-flight generation ((peak RSS - RSS of the fresh process)
/ peak in flight), and the JOBS redeliveries (a job held past its ack wait is sent again).
N grows until a round fails or the time cap is reached.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import psutil

from bench.common import Figure, connect, pass_id, seed_credits
from bench.profile import Profile, Recorder
from bench.stack import Stack
from libs.bus import Bus
from libs.schemas import Flow, GenerationRequest, GenerationRequested, Inputs, Stream

CALL_LATENCY_MS = 500  # scans, the prompt writer, the prediction's creation
MB = 1024 * 1024
TARGET_N, TARGET_RSS_MB = 10_000, 500


async def _redelivered(bus: Bus) -> int:
    info = await bus.js.consumer_info(Stream.JOBS.value, "pipeline")
    return int(info.num_redelivered or 0)


async def run(stack: Stack, sizes: list[int], cap_s: float, round_timeout_s: float, predict_latency_s: float = 60.0,
              profile_dir: Path | None = None, profile_s: float = 8.0) -> tuple[Figure, Profile | None]:
    """The figure, and with `profile_dir` a py-spy profile of the pipeline while the largest round starts."""
    bus = await connect(stack.nats_url, "bench-capacity")
    await seed_credits(bus, max(sizes), 10, tag="capacity")  # one customer per generation
    stack.start("pipeline", offline_latency_ms=CALL_LATENCY_MS,
                offline_predict_latency_ms=int(predict_latency_s * 1000),
                provider_timeout_s=max(600, predict_latency_s * 3))
    fresh_rss = psutil.Process(stack.pid("pipeline")).memory_info().rss
    started_ids: set[str] = set()
    finished: dict[str, str] = {}
    ends = 0

    async def on_event(msg: object) -> None:
        nonlocal ends
        parts = msg.subject.split(".")  # type: ignore[attr-defined]
        if len(parts) != 4:
            return
        gid, kind = parts[2], parts[3]
        if kind == "status":
            started_ids.add(gid)
        elif kind in ("done", "failed"):
            finished[gid] = kind
            ends += 1

    subs = [await bus.nc.subscribe(f"mma.evt.*.{k}", cb=on_event) for k in ("status", "done", "failed")]
    rounds: list[str] = []
    recorder: Recorder | None = None
    shortfall = ""
    best, best_rss, best_kb, failed_total, redelivered_total, extra_ends = 0, 0, 0.0, 0, 0, 0
    began = time.monotonic()
    latency = f"{predict_latency_s:.0f} s per prediction"
    try:
        for n in sizes:
            if time.monotonic() - began > cap_s:
                rounds.append(f"N={n} skipped (time cap {cap_s:.0f}s)")
                break
            ids = [uuid.uuid4().hex for _ in range(n)]
            mine = set(ids)
            ends_before, redelivered_before = ends, await _redelivered(bus)
            cpu_before = stack.cpu_seconds().get("pipeline", 0.0)
            stack.rss.reset_window()
            request = GenerationRequest(inputs=Inputs(user_brief="a red glass bottle on a marble plinth"))
            commands = [GenerationRequested(generation_id=g, pass_id=pass_id(i), flow=Flow.STILL_CREATE,
                                            request=request) for i, g in enumerate(ids)]
            t0 = time.monotonic()
            if profile_dir is not None and n == max(sizes):
                recorder = Recorder("pipeline (capacity, starting runs)", stack.pid("pipeline"), profile_s,
                                    profile_dir)
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
                await asyncio.sleep(0.5)
            elapsed = time.monotonic() - t0
            stack.rss.sample()
            rss = stack.rss.window.get("pipeline", 0)
            kb = (rss - fresh_rss) / 1024 / max(1, peak)
            # per generation the pipeline started (a round that did not start them all must not divide
            # its CPU by generations that never ran)
            started_n = len(mine & started_ids)
            cpu_ms = (stack.cpu_seconds().get("pipeline", 0.0) - cpu_before) * 1000 / max(1, started_n)
            done = sum(1 for g in ids if finished.get(g) == "done")
            failed = sum(1 for g in ids if finished.get(g) == "failed")
            redelivered = await _redelivered(bus) - redelivered_before
            doubled = (ends - ends_before) - (done + failed)  # an end published twice
            failed_total += failed
            redelivered_total += redelivered
            extra_ends += max(0, doubled)
            ok = done == n and peak >= 0.9 * n and rss < TARGET_RSS_MB * MB and not redelivered and doubled <= 0
            rounds.append(f"N={n}: peak {peak} in flight at {peak_at:.0f}s, {done} done, {failed} failed, "
                          f"{redelivered} redelivered, {elapsed:.0f}s, RSS {rss / MB:.0f} MB, {kb:.1f} KB each, "
                          f"pipeline CPU {cpu_ms:.1f} ms per started generation ({started_n} started)")
            if not ok:
                shortfall = f"N={n}: peak {peak} in flight" + (
                    f" (< 90%: the runs started at {peak / max(peak_at, 1):.0f}/s, slower than the first ones ended)"
                    if peak < 0.9 * n else "")
                break
            best, best_rss, best_kb = n, rss, kb
    finally:
        for sub in subs:
            await sub.unsubscribe()
        await bus.close()
        stack.stop("pipeline")
    profile = await asyncio.to_thread(recorder.result) if recorder is not None else None
    clean = not (failed_total or redelivered_total or extra_ends)
    met = best >= TARGET_N and predict_latency_s >= 60 and best_rss < TARGET_RSS_MB * MB and clean
    why = []
    if best < TARGET_N:
        why.append(f"largest clean round N={best}" + (f"; {shortfall}" if shortfall else ""))
    for count, what in ((failed_total, "failed"), (redelivered_total, "jobs redelivered"),
                        (extra_ends, "ends published twice")):
        if count:
            why.append(f"{count} {what}")
    head = (f"{best} generations in flight on one pipeline process, RSS {best_rss / MB:.0f} MB, {best_kb:.1f} KB "
            f"per in-flight generation" if best else "no round met all its conditions on one pipeline process")
    text = (f"{head} ({latency}, {CALL_LATENCY_MS} ms per other call; fresh process {fresh_rss / MB:.0f} MB) "
            f"[{'; '.join(rounds)}] (target >= {TARGET_N:,} at 60 s, RSS < {TARGET_RSS_MB} MB, no failure)")
    return Figure("in-flight capacity", text, met, ", ".join(why)), profile
