"""HeapKeeper: a full collection's survivors are frozen, and its own full pass reclaims a frozen cycle."""

from __future__ import annotations

import gc
import weakref

from services.gateway.heap import HeapKeeper
from tests.helpers import wait_for


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


async def test_survivors_frozen_and_full_pass_reclaims_frozen_cycles() -> None:
    keeper = HeapKeeper(full_every_s=0.2)
    gc.unfreeze()
    keeper.start()
    try:
        node = _Node()
        gone = weakref.ref(node)
        gc.collect()  # a full collection: what it leaves is frozen
        assert gc.get_freeze_count() > 0
        del node  # dies frozen, in a cycle: the young collections never see it
        gc.collect(0)
        assert gone() is not None
        await wait_for(lambda: keeper.full_passes >= 1, 10, what="the keeper's own full pass")
        assert gone() is None
    finally:
        await keeper.stop()
        gc.unfreeze()
    assert keeper._after_collection not in gc.callbacks
