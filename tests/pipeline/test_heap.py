"""The pipeline's collector policy: survivors of a collection are frozen, a full pass reclaims frozen cycles."""

from __future__ import annotations

import gc
import weakref

from services.pipeline.heap import HeapKeeper


class Node:
    other: Node | None = None


async def test_survivors_are_frozen_and_a_full_pass_frees_a_frozen_cycle() -> None:
    before = gc.get_threshold()
    keeper = HeapKeeper(full_every_s=3600, young=50_000)
    keeper.start()
    try:
        assert gc.get_threshold()[0] == 50_000
        a, b = Node(), Node()
        a.other, b.other = b, a
        ref = weakref.ref(a)
        gc.collect(0)  # a young collection: what survived it is frozen
        frozen = gc.get_freeze_count()
        assert frozen > 0
        del a, b
        gc.collect()  # the cycle is garbage now, but frozen: no collection of the generations sees it
        assert ref() is not None
        assert keeper.full_pass() >= 2 and ref() is None
        assert keeper.full_passes == 1 and gc.get_freeze_count() > 0
    finally:
        await keeper.stop()
        gc.unfreeze()
    assert gc.get_threshold() == before
