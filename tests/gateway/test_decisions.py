"""A decision can be broadcast before the stream stores it: readers of a fresh generation wait."""

from __future__ import annotations

import asyncio

from libs.bus import Bus
from libs.schemas import Flow, GenerationAccepted, GenerationRequest, Inputs, new_id
from services.gateway.adapters.decisions import Decisions, wait_until_stored
from services.gateway.adapters.fanout import Fanout


def accepted(generation_id: str) -> GenerationAccepted:
    return GenerationAccepted(generation_id=generation_id, pass_id="pass:anon:dec", flow=Flow.STILL_CREATE,
                              price=1, balance=4, request=GenerationRequest(inputs=Inputs(user_brief="x")),
                              request_id="req-dec")


async def test_a_reader_of_a_just_decided_generation_waits_for_the_store(bus: Bus) -> None:
    """The broadcast arrived, the stream has nothing yet: the wait ends when the event is stored
    (not before), later reads of the same id do not wait, and an id never decided does not wait."""
    decisions = Decisions()
    fanout = Fanout(bus)
    generation_id = new_id()
    decisions._on_decision(accepted(generation_id))  # as the core broadcast delivers it
    try:
        waiting = asyncio.create_task(wait_until_stored(fanout, decisions, generation_id, timeout_s=10))
        done, _ = await asyncio.wait({waiting}, timeout=0.3)
        assert not done, "returned before anything was stored"
        await bus.publish(accepted(generation_id))
        await asyncio.wait_for(waiting, 5)
        assert not decisions.recently_decided(generation_id)
        await asyncio.wait_for(wait_until_stored(fanout, decisions, generation_id, timeout_s=10), 0.5)
        await asyncio.wait_for(wait_until_stored(fanout, decisions, new_id(), timeout_s=10), 0.5)
    finally:
        await fanout.stop()
