"""A cancel request stops the run's wait even when something below swallows the first cancellation."""

from __future__ import annotations

import asyncio

from services.pipeline.control import CancelSwitch


async def poll_that_swallows_one_cancel(swallowed: list[int]) -> str:
    """A provider poll loop whose first cancellation is lost, as Python 3.11's `asyncio.wait_for` loses one
    that lands just as the inner call finished: the loop would go on until the prediction ends."""
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed.append(1)
            task = asyncio.current_task()
            assert task is not None
            task.uncancel()


async def test_a_cancel_request_stops_a_wait_that_swallowed_the_first_cancellation() -> None:
    switch = CancelSwitch(recancel_s=0.05)
    swallowed: list[int] = []
    run = asyncio.create_task(switch.interruptible(poll_that_swallows_one_cancel(swallowed)))
    await asyncio.sleep(0.05)  # the poll is under way
    switch.request("admin")
    await asyncio.wait([run], timeout=5)
    assert run.done(), "the wait went on after the cancel request"
    assert run.cancelled() and swallowed == [1] and switch.requested_by == "admin"


async def test_a_wait_that_ends_on_its_own_is_not_cancelled_later() -> None:
    """The repeated cancel stops with the wait: the next wait of the run is left alone."""
    switch = CancelSwitch(recancel_s=0.01)
    assert await switch.interruptible(asyncio.sleep(0, result="first")) == "first"
    switch.request("stream")  # between two waits: the run's own check between steps sees it
    second = asyncio.create_task(switch.interruptible(asyncio.sleep(0.1, result="second")))
    async with asyncio.timeout(5):
        assert await second == "second"
