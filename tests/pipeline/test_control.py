"""A cancel request stops the run's wait even when something below swallows the first cancellation."""

from __future__ import annotations

import asyncio

from services.pipeline.control import CancelSwitch


async def poll_that_swallows_one_cancel(started: asyncio.Event, swallowed: list[int]) -> str:
    """A provider wait whose first cancellation is lost, as Python 3.11's `asyncio.wait_for` loses one that
    lands just as the inner call finished: the wait would go on until the prediction ends."""
    started.set()
    while True:
        try:
            await asyncio.Event().wait()  # the prediction, never finishing on its own
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(1)
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()


async def test_a_cancel_request_stops_a_wait_that_swallowed_the_first_cancellation() -> None:
    switch = CancelSwitch(recancel_s=0.05)
    started = asyncio.Event()
    swallowed: list[int] = []
    run = asyncio.create_task(switch.interruptible(poll_that_swallows_one_cancel(started, swallowed)))
    async with asyncio.timeout(5):
        await started.wait()
    switch.request("admin")
    await asyncio.wait([run], timeout=5)
    assert run.done(), "the wait went on after the cancel request"
    assert run.cancelled() and swallowed == [1] and switch.requested_by == "admin"


async def test_a_wait_that_ends_on_its_own_is_not_cancelled_later() -> None:
    """The repeated cancel stops with the wait: the next wait of the run is left alone."""
    switch = CancelSwitch(recancel_s=0.01)
    first: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    first.set_result("first")
    assert await switch.interruptible(first) == "first"
    switch.request("stream")  # between two waits: the run's own check between steps sees it
    release = asyncio.Event()

    async def second_wait() -> str:
        await release.wait()
        return "second"

    second = asyncio.create_task(switch.interruptible(second_wait()))
    # several re-cancel periods pass while the second wait is open: none of them reaches it
    loop = asyncio.get_running_loop()
    loop.call_later(0.1, release.set)
    async with asyncio.timeout(5):
        assert await second == "second"
