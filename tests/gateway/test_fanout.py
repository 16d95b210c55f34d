"""The SSE fan-out's replay from memory: a generation watched from its decision replays without a
round trip, resumes after a sequence, goes on live; one decided twice replays from the stream."""

from __future__ import annotations

import asyncio

from libs.bus import Bus
from libs.schemas import TYPE_HEADER, Flow, GenerationAccepted, ScanLine, new_id
from services.gateway.adapters.fanout import Fanout
from tests.helpers import wait_for

OWNER = "pass:anon:fan-mem"


def accepted(generation_id: str) -> GenerationAccepted:
    return GenerationAccepted(generation_id=generation_id, pass_id=OWNER, flow=Flow.STILL_CREATE, price=1, balance=3)


def line(generation_id: str, index: int) -> ScanLine:
    return ScanLine(generation_id=generation_id, pass_id=OWNER, index=index, text=f"line {index}")


async def test_replay_from_memory_then_resume_then_live(bus: Bus) -> None:
    fanout = Fanout(bus)
    await fanout.start()
    try:
        gid = new_id()
        for msg in (accepted(gid), line(gid, 0), line(gid, 1)):
            await bus.publish(msg)
        await wait_for(lambda: fanout.seen_seq and len(getattr(fanout._kept.get(gid), "raws", [])) == 3, 10,
                       what="the three events kept")
        watch, replayed = await fanout.open(gid)
        assert fanout._kept[gid].verified
        assert [type(d.msg).__name__ for d in replayed] == ["GenerationAccepted", "ScanLine", "ScanLine"]
        seqs = [d.seq for d in replayed]
        assert seqs == sorted(seqs)
        resumed, again = await fanout.open(gid, seqs[0])
        assert [d.seq for d in again] == seqs[1:]
        await bus.publish(line(gid, 2))
        for w in (watch, resumed):
            batch = await asyncio.wait_for(w.next(), 5)
            assert batch is not None and [d.msg.index for d in batch] == [2]  # type: ignore[attr-defined]
        fanout.unregister(watch)
        fanout.unregister(resumed)
    finally:
        await fanout.stop()


async def test_a_generation_decided_twice_replays_from_the_stream(bus: Bus) -> None:
    gid = new_id()
    await bus.publish(accepted(gid))
    await bus.publish(line(gid, 0))
    fanout = Fanout(bus)
    await fanout.start()
    try:  # the same decision stored again (past the dedupe window): memory would miss the line before it
        await bus.publish_raw(f"mma.evt.{gid}.accepted", accepted(gid).model_dump_json().encode(),
                              {TYPE_HEADER: "GenerationAccepted"})
        await wait_for(lambda: gid in fanout._kept, 10, what="the repeated decision kept")
        _, replayed = await fanout.open(gid)
        assert gid not in fanout._kept
        assert [type(d.msg).__name__ for d in replayed] == ["GenerationAccepted", "ScanLine", "GenerationAccepted"]
    finally:
        await fanout.stop()
