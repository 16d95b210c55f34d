"""`python -m bench [--quick] [--only a,b] [--no-profile] [--keep] [--pg-fast] [--sse-streams N ..]`: run the figures.

Figures: durability, replicas, cold, steps, accept, credits, e2e, sse, capacity, projection (seven of
them have targets). Everything runs on loopback with count and time limits, in a
temporary state dir (embedded NATS + Postgres on free ports, never 4222/5432).
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from bench import accept, capacity, coldstart, credits, durability, e2e, projection, replicas, sse, steps
from bench.common import Figure, connect, host_probe_ms, quiet_logs, seed_credits, wakeup_probe_us
from bench.profile import Profile
from bench.stack import Stack
from bench.wrkload import ensure_wrk

ORDER = ("durability", "replicas", "cold", "steps", "sse", "credits", "accept", "e2e", "capacity", "projection")
TARGETED = {"cold", "steps", "accept", "credits", "sse", "capacity", "projection"}  # figures that carry a target
MB = 1024 * 1024


@dataclass(frozen=True)
class Plan:
    """Counts and time limits of one run."""

    durability_count: int
    durability_cap_s: float
    steps_count: int
    accept_s: float
    credits_s: float
    sse_streams: int
    sse_lines: int
    sse_window_s: float
    sse_clients: int
    capacity_sizes: tuple[int, ...]
    capacity_cap_s: float
    capacity_round_s: float
    capacity_latency_s: float  # per prediction
    projection_events: int
    projection_cap_s: float
    profile_s: float
    e2e_count: int = 200


FULL = Plan(20_000, 4, 40, 10, 8, 10_000, 4, 20, 4, (10_000,), 200, 200, 60, 50_000, 90, 8)
QUICK = Plan(3_000, 2, 10, 4, 3, 200, 3, 4, 2, (200,), 60, 60, 10, 5_000, 30, 4, e2e_count=40)


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def raise_fd_limit() -> None:
    """Thousands of SSE sockets: lift the soft open-files limit (inherited by the services)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


async def _with_stack(stack: Stack, selected: list[str], plan: Plan, out_dir: Path, do_profile: bool,
                      figures: list[Figure], profiles: list[Profile]) -> None:
    bus = await connect(stack.nats_url, "bench-seed")
    try:
        await seed_credits(bus, 1000, 1_000_000)
    finally:
        await bus.close()
    if "steps" in selected:
        say("step overhead ...")
        stack.start("pipeline")
        figures.append(await steps.run(stack, plan.steps_count))
        stack.stop("pipeline")
    if "sse" in selected:
        say("SSE fan-out ...")
        figures.append(await sse.run(stack, plan.sse_streams, plan.sse_lines, plan.sse_window_s, plan.sse_clients,
                                     out_dir))
    if "credits" in selected:
        say("credit applies ...")
        figures.append(await credits.run(stack, plan.credits_s, 1_000_000))
    if "accept" in selected:
        say("accept rate (wrk) ...")
        figures.append(await asyncio.to_thread(accept.run, stack, plan.accept_s, 1000))
        if do_profile:
            say("profiling the accept path (py-spy) ...")
            profiles.extend(await asyncio.to_thread(accept.profile, stack, plan.profile_s, 1000, out_dir))
        await _purge_jobs(stack)
    if "e2e" in selected:
        say("end-to-end CPU per still generation ...")
        mono = next((f.extra["monolith"].cpu_total for f in figures if "monolith" in f.extra), None)
        stack.start("pipeline")
        figures.append(await e2e.run(stack, plan.e2e_count, mono))
        stack.stop("pipeline")
    if "capacity" in selected:
        say("in-flight capacity ...")
        figure, prof = await capacity.run(stack, list(plan.capacity_sizes), plan.capacity_cap_s,
                                          plan.capacity_round_s, plan.capacity_latency_s,
                                          out_dir if do_profile else None, plan.profile_s)
        figures.append(figure)
        if prof is not None:
            profiles.append(prof)
    if "projection" in selected:
        say("ledger projection ...")
        figure, prof = await projection.run(stack, plan.projection_events, plan.projection_cap_s, out_dir,
                                            do_profile)
        figures.append(figure)
        if prof is not None:
            profiles.append(prof)


async def _purge_jobs(stack: Stack) -> None:
    """Accepted jobs of the accept-rate run never run: the pipeline was stopped."""
    bus = await connect(stack.nats_url, "bench-purge")
    try:
        await bus.js.purge_stream("MMA_JOBS")
    finally:
        await bus.close()


def print_targets(figures: list[Figure], selected: list[str]) -> None:
    """Each target once more, met or missed with its reason, just above the count."""
    targeted = [f for f in figures if f.met is not None]
    if targeted:
        print("targets:")
    for figure in targeted:
        print(f"  {figure.name}: " + ("met" if figure.met else f"MISSED ({figure.why})"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small counts and short runs (development)")
    parser.add_argument("--only", default="", help=f"comma-separated figures: {','.join(ORDER)}")
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument("--keep", action="store_true", help="keep the temp state dir (logs, profiles)")
    parser.add_argument("--pg-fast", action="store_true", help="Postgres with fsync off (default: as `make up`)")
    parser.add_argument("--capacity", default="", metavar="N,N", help="in-flight capacity round sizes")
    parser.add_argument("--capacity-latency", type=float, metavar="S", help="seconds per offline prediction")
    for field, kind, what in (("sse_streams", int, "SSE streams"), ("sse_lines", int, "scan lines per SSE stream"),
                              ("sse_window_s", float, "seconds the SSE lines are spread over"),
                              ("sse_clients", int, "SSE client processes")):
        parser.add_argument("--" + field.removesuffix("_s").replace("_", "-"), dest=field, type=kind,
                            help=f"{what} (overrides the plan)")
    args = parser.parse_args(argv)
    selected = [f.strip() for f in args.only.split(",") if f.strip()] or list(ORDER)
    unknown = set(selected) - set(ORDER)
    if unknown:
        parser.error(f"unknown figure(s) {sorted(unknown)}; choose from {','.join(ORDER)}")
    plan = QUICK if args.quick else FULL
    if args.capacity:
        sizes = tuple(int(n) for n in args.capacity.split(","))
        plan = replace(plan, capacity_sizes=sizes, capacity_round_s=max(plan.capacity_round_s, 120.0),
                       capacity_cap_s=max(plan.capacity_cap_s, 200.0 * len(sizes)))
    if args.capacity_latency is not None:
        plan = replace(plan, capacity_latency_s=args.capacity_latency,
                       capacity_round_s=max(plan.capacity_round_s, args.capacity_latency * 3))
    plan = replace(plan, **{f: getattr(args, f) for f in ("sse_streams", "sse_lines", "sse_window_s",
                                                                       "sse_clients") if getattr(args, f) is not None})
    do_profile = not args.no_profile
    quiet_logs()
    raise_fd_limit()
    if "accept" in selected:
        ensure_wrk()
    root = Path(tempfile.mkdtemp(prefix="mina-bench-"))
    began = time.monotonic()
    probe_before, wakeup_before = host_probe_ms(), wakeup_probe_us()
    figures: list[Figure] = []
    profiles: list[Profile] = []
    stack: Stack | None = None
    try:
        if "durability" in selected:
            say("durability (sync_interval) ...")
            figures.append(asyncio.run(durability.run(root, plan.durability_count, plan.durability_cap_s)))
        if "replicas" in selected:
            say("replicas (R1 vs a 3-node cluster at R3) ...")
            figures.append(asyncio.run(replicas.run(root, plan.durability_count, plan.durability_cap_s)))
        if "cold" in selected:
            say("cold start ...")
            figures.append(coldstart.run(root))
        if set(selected) - {"durability", "replicas", "cold"}:
            say(f"starting NATS, Postgres and the services under {root} ...")
            stack = Stack(root / "stack", pg_fast=args.pg_fast)
            stack.start_infra()
            for name in ("ledger", "billing", "gateway"):
                stack.start(name)
            asyncio.run(_with_stack(stack, selected, plan, root, do_profile, figures, profiles))
    finally:
        if stack is not None:
            stack.rss.sample()
            peaks = dict(stack.rss.peaks)
            stack.close()
        else:
            peaks = {}
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    probe_after, wakeup_after = host_probe_ms(), wakeup_probe_us()
    print(f"host: a fixed piece of Python work took {probe_before:.0f} ms before the figures and "
          f"{probe_after:.0f} ms after (best of 5; lower is faster; this VM has read 70-115 ms within a "
          f"minute); waking another process (a one-byte pipe round trip) took {wakeup_before:.0f} us before "
          f"and {wakeup_after:.0f} us after (best of 3 x 2,000; 72-165 us across the two CPUs here, 8-9 us "
          f"with both on one CPU). Absolute figures move with both; ratios taken in one run do not")
    for figure in figures:
        print(figure.line())
    if peaks:
        order = ("gateway", "billing", "pipeline", "ledger", "nats-server", "postgres")
        print("peak RSS: " + ", ".join(f"{n} {peaks[n] / MB:.0f} MB" for n in order if n in peaks)
              + " (postgres: postmaster only)")
    for prof in profiles:
        print("profile " + prof.render().strip())
    print_targets(figures, selected)
    targeted = [f for f in figures if f.name and f.met is not None]
    met = sum(1 for f in targeted if f.met)
    total = max(len(targeted), len(TARGETED & set(selected)))  # a targeted figure that never printed is missed
    print(f"bench: {met}/{total} targets met ({'quick' if args.quick else 'full'} run, "
          f"{time.monotonic() - began:.0f}s){'  state kept in ' + str(root) if args.keep else ''}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
