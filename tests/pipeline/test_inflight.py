"""What keeps a run in flight cheap, without servers: shared config snapshots, shared offline renders and
scans, the start gate."""

from __future__ import annotations

import asyncio

import pytest

from libs.schemas import ConfigEntry
from services.pipeline.adapters.offline import Memo, OfflineScanner
from services.pipeline.config import ActiveConfig, fallback_entry
from services.pipeline.control import StartGate
from tests.pipeline.conftest import png_bytes


def config(system: str) -> ActiveConfig:
    entry = fallback_entry("mma.ctx.gpt_reader")
    value = {**entry.value, "system": system}
    return ActiveConfig({entry.key: ConfigEntry(key=entry.key, version=entry.version, id=entry.id, value=value)})


async def test_runs_on_the_same_config_share_one_snapshot():
    """Equal maps give the same JSON and the same config objects (what thousands of runs in flight hold once);
    a different map does not."""
    first, again = config("write a prompt").to_json(), config("write a prompt").to_json()
    assert first is again
    assert ActiveConfig.from_json(first) is ActiveConfig.from_json(dict(again))
    other = config("write another prompt").to_json()
    assert other is not first and other != first


async def test_a_memo_computes_once_for_concurrent_callers_and_forgets_failures():
    memo: Memo[str, int] = Memo(2)
    calls = 0
    started, release = asyncio.Event(), asyncio.Event()

    async def compute() -> int:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        return 7

    waiting = [asyncio.create_task(memo.get("a", compute)) for _ in range(5)]
    await asyncio.wait_for(started.wait(), 1)
    release.set()
    assert await asyncio.gather(*waiting) == [7] * 5 and calls == 1

    async def broken() -> int:
        raise ValueError("no")

    with pytest.raises(ValueError):
        await memo.get("b", broken)
    assert await memo.get("b", compute) == 7 and calls == 2  # a failure is not remembered


async def test_a_scan_reads_its_image_before_its_latency_and_shares_it():
    """Two scans of the same bytes: one analysis, the same facts."""
    scanner = OfflineScanner(latency_ms=1)
    image = png_bytes((200, 30, 30), (64, 48))
    first, second = await asyncio.gather(*(scanner.scan(image, system="", purpose="product") for _ in range(2)))
    assert first.details == second.details and first.details["width"] == 64
    assert len(scanner.facts.entries) == 1


async def still_waiting(task: asyncio.Task[object]) -> None:
    """The task is not done within 50 ms (it waits for a place)."""
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), 0.05)


async def test_the_start_gate_lets_a_limited_number_start_and_leaving_is_idempotent():
    gate = StartGate(1)
    leave = await gate.enter()
    second = asyncio.create_task(gate.enter())
    await still_waiting(second)
    leave()
    leave()  # twice: still one place given back
    leave_second = await asyncio.wait_for(second, 1)
    third = asyncio.create_task(gate.enter())
    await still_waiting(third)
    leave_second()
    (await asyncio.wait_for(third, 1))()
    open_gate = StartGate(0)
    (await open_gate.enter())()
