"""`Bus.serve` runs at most `concurrency` requests of one subject at once; the rest wait in line as messages."""

from __future__ import annotations

import asyncio

from libs.bus import Bus
from libs.schemas import CustomerView, GetCustomer
from tests.helpers import wait_for


async def test_serve_runs_at_most_its_concurrency_and_answers_every_request(bus: Bus) -> None:
    """12 requests against a handler bounded to 3: 3 run, the other 9 wait undelivered to it, all are answered."""
    gate = asyncio.Event()
    running = 0
    started = 0
    most = 0

    async def get(req: GetCustomer, deps: None) -> CustomerView:
        nonlocal running, started, most
        started += 1
        running += 1
        most = max(most, running)
        await gate.wait()
        running -= 1
        return CustomerView(pass_id=req.pass_id, credits=1)

    await bus.serve(GetCustomer, get, None, queue="ledger", concurrency=3)
    sub = bus.subscriptions[-1]
    calls = [asyncio.create_task(bus.request(GetCustomer(pass_id=f"pass:anon:{i}"), CustomerView, timeout=30))
             for i in range(12)]
    # every request reached this process: started, or waiting as a message (`pending_msgs`), none as a task
    await wait_for(lambda: started + sub.pending_msgs >= 11, 10, what="all requests delivered")
    assert started == 3 and running == 3
    gate.set()
    answers = await asyncio.gather(*calls)
    assert sorted(a.pass_id for a in answers) == sorted(f"pass:anon:{i}" for i in range(12))
    assert most == 3 and started == 12
