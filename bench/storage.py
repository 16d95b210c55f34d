"""`python -m bench.storage [--chains N]`: what a generation costs on JetStream's disk.

Runs N chains (a still create, then a still tweak or a video animate, like the fault suite)
through the gateway on the offline provider, then reads the EVENTS stream and the run
checkpoint bucket: bytes and messages per generation, the checkpoint bytes of a run in
flight (sampled) and what a finished run leaves until its marker expires. docs/runbook.md
(Storage) extrapolates these figures to a day of traffic.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import connect, pass_id, seed_credits
from bench.stack import Stack
from libs.bus import Bus
from libs.kv import kv_stream
from libs.schemas import Stream
from services.pipeline.checkpoint import BUCKET

FINAL_TTL_S = 30.0


async def wait_done(client: httpx.AsyncClient, gid: str, timeout_s: float = 120.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        state = str((await client.get(f"/mma/generations/{gid}")).json().get("state"))
        if state in ("done", "error", "cancelled", "suggested") or time.monotonic() > deadline:
            return state
        await asyncio.sleep(0.1)


async def chain(client: httpx.AsyncClient, i: int, gids: list[str]) -> None:
    customer = pass_id(i)
    first = (await client.post("/mma/still/create", json={
        "passId": customer, "inputs": {"brief": f"bottle {i} on marble", "aspect_ratio": "1:1"}})).json()
    gid = first["generation_id"]
    gids.append(gid)
    if await wait_done(client, gid) != "done":
        return
    if i % 2:
        second = await client.post("/mma/video/animate", json={
            "passId": customer, "assets": {"input_still_generation_id": gid},
            "inputs": {"motion_user_brief": "slow orbit", "aspect_ratio": "9:16"}})
    else:
        second = await client.post(f"/mma/still/{gid}/tweak", json={
            "passId": customer, "feedback": {"still_feedback": "warmer light"}})
    gids.append(second.json()["generation_id"])
    await wait_done(client, gids[-1])


async def kv_state(bus: Bus) -> tuple[int, int, int]:
    info = await bus.js.stream_info(kv_stream(BUCKET), subjects_filter=">")
    return int(info.state.bytes), int(info.state.messages), len(info.state.subjects or {})


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


async def measure(stack: Stack, chains: int) -> dict[str, Any]:
    bus = await connect(stack.nats_url)
    await seed_credits(bus, chains, 50, tag="storage")
    events_before = await bus.js.stream_info(Stream.EVENTS.value)
    peak_live: list[float] = []
    gids: list[str] = []
    stop = asyncio.Event()

    async def sample() -> None:  # checkpoint bytes per run in flight (two keys per run)
        while not stop.is_set():
            size, _msgs, subjects = await kv_state(bus)
            runs = subjects / 2
            if runs >= 1:
                peak_live.append(size / runs)
            await asyncio.sleep(0.05)

    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=60.0) as client:
        await asyncio.gather(*(chain(client, i, gids) for i in range(chains)))
    elapsed = time.monotonic() - started
    stop.set()
    await sampler
    events = await bus.js.stream_info(Stream.EVENTS.value)
    ended_bytes, ended_msgs, _ = await kv_state(bus)
    for _ in range(int(FINAL_TTL_S) + 30):  # the finished runs' markers expire
        expired_bytes = (await kv_state(bus))[0]
        if expired_bytes == 0:
            break
        await asyncio.sleep(1.0)
    await bus.close()
    n = len(gids)
    event_bytes = int(events.state.bytes) - int(events_before.state.bytes)
    event_msgs = int(events.state.messages) - int(events_before.state.messages)
    return {
        "generations": n, "seconds": round(elapsed, 1),
        "events_bytes_per_generation": round(event_bytes / n), "events_msgs_per_generation": round(event_msgs / n, 1),
        "checkpoint_bytes_per_run_in_flight": round(max(peak_live)) if peak_live else None,
        "checkpoint_bytes_per_finished_run_until_ttl": round(ended_bytes / n),
        "checkpoint_msgs_after_end": ended_msgs, "checkpoint_bytes_after_ttl": expired_bytes,
        "jetstream_dir_bytes": du(stack.root / "nats"),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chains", type=int, default=40)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="mina-storage-"))
    stack = Stack(root / "stack", pg_fast=True)
    try:
        stack.start_infra()
        for name in ("ledger", "billing"):
            stack.start(name)
        stack.start("pipeline", checkpoint_final_ttl_s=FINAL_TTL_S)
        stack.start("gateway")
        figures = asyncio.run(measure(stack, args.chains))
        for key, value in figures.items():
            print(f"storage: {key} = {value}")
    finally:
        stack.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
