"""A supervised background task is started again after an unexpected error, which is logged and counted."""

from __future__ import annotations

import asyncio

from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from libs.supervise import stop, supervised


def restarts(task: str) -> float:
    return REGISTRY.get_sample_value("mina_task_restarts_total", {"task": task}) or 0.0


async def test_a_crashing_task_is_restarted_logged_and_counted() -> None:
    """Two crashes, then a clean run: three runs, two `service.task_crashed` lines, the metric up by two."""
    runs = 0

    async def work() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError(f"bug number {runs}")

    before = restarts("test:crashy")
    with capture_logs() as logs:
        await asyncio.wait_for(supervised("test:crashy", work, restart_delay_s=0), 10)
    assert runs == 3
    crashed = [e for e in logs if e["event"] == "service.task_crashed"]
    assert [e["error"] for e in crashed] == ["RuntimeError('bug number 1')", "RuntimeError('bug number 2')"]
    assert all(e["task"] == "test:crashy" for e in crashed)
    assert restarts("test:crashy") == before + 2


async def test_a_supervised_task_stops_when_cancelled() -> None:
    """Cancelling is not a crash: the task ends and nothing is counted."""
    began = asyncio.Event()

    async def forever() -> None:
        began.set()
        await asyncio.Event().wait()

    before = restarts("test:forever")
    task = supervised("test:forever", forever)
    await asyncio.wait_for(began.wait(), 10)
    await stop(task)
    assert task.done() and restarts("test:forever") == before
