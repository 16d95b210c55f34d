"""HeapKeeper (libs/heap.py): survivors are frozen, and the keeper's own full pass reclaims a frozen cycle."""

from __future__ import annotations

import gc
import weakref

from libs.heap import ANY, FULL, HeapKeeper
from tests.helpers import wait_for


class _Node:
    other: _Node | None = None


def _cycle() -> tuple[_Node, weakref.ref[_Node]]:
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a reference cycle: only the cyclic collector frees it
    return a, weakref.ref(a)


async def test_after_full_collections_survivors_frozen_and_own_full_pass_reclaims_them() -> None:
    keeper = HeapKeeper("test", FULL, full_every_s=0.2)
    gc.unfreeze()
    keeper.start()
    try:
        node, gone = _cycle()
        gc.collect(0)  # a young collection freezes nothing here
        assert gc.get_freeze_count() == 0
        gc.collect()  # a full collection: what it leaves is frozen
        assert gc.get_freeze_count() > 0
        del node  # dies frozen, in a cycle: the generations' collections never see it
        gc.collect()
        assert gone() is not None
        await wait_for(lambda: keeper.full_passes >= 1, 10, what="the keeper's own full pass")
        assert gone() is None
    finally:
        await keeper.stop()
        gc.unfreeze()
    assert keeper._after_collection not in gc.callbacks


async def test_after_any_collection_survivors_frozen_and_thresholds_restored() -> None:
    before = gc.get_threshold()
    keeper = HeapKeeper("test", ANY, full_every_s=3600, young=50_000)
    gc.unfreeze()
    keeper.start()
    try:
        assert gc.get_threshold()[0] == 50_000
        node, gone = _cycle()
        gc.collect(0)  # a young collection: what survived it is frozen
        assert gc.get_freeze_count() > 0
        del node
        gc.collect()  # garbage now, but frozen: no collection of the generations sees it
        assert gone() is not None
        assert keeper.full_pass() >= 2 and gone() is None
        assert keeper.full_passes == 1 and gc.get_freeze_count() > 0
    finally:
        await keeper.stop()
        gc.unfreeze()
    assert gc.get_threshold() == before
