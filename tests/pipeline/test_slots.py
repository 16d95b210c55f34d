"""Customer slots on the real KV: taken at once when free, waited for in line, freed only by their run."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import nats.js.errors
import pytest

from libs.bus import Bus
from libs.settings import Settings
from services.pipeline.slots import CustomerSlots, pass_key
from tests.helpers import wait_for

PASS = "pass:user:slots"
PK = pass_key(PASS)


async def never_asked() -> int:
    raise AssertionError("a job that finds a free slot is never asked its place in line")


@pytest.fixture
async def slots(bus: Bus, settings: Settings) -> AsyncIterator[CustomerSlots]:
    opened = await CustomerSlots.open(bus.js, settings.model_copy(update={
        "max_running_per_customer": 2, "slot_poll_interval_s": 0.02}))
    yield opened


async def waiting(slots: CustomerSlots) -> bytes:
    try:
        return (await slots.kv.get(f"w.{PK}")).value or b""
    except nats.js.errors.KeyNotFoundError:
        return b""


async def test_free_slots_are_taken_at_once_and_a_freed_one_again(slots: CustomerSlots):
    """Two runs take the two slots without joining the waiting list; a released slot is taken by the next run."""
    first = await slots.acquire("gen-a", PASS, never_asked)
    second = await slots.acquire("gen-b", PASS, never_asked)
    assert {first.key, second.key} == {f"s.{PK}.0", f"s.{PK}.1"}
    freed = first.key
    await first.release("gen-a")
    third = await slots.acquire("gen-c", PASS, never_asked)
    assert third.key == freed
    assert await waiting(slots) == b""
    for slot, generation_id in ((second, "gen-b"), (third, "gen-c")):
        await slot.release(generation_id)


async def test_a_redelivered_run_takes_its_own_slot_back(slots: CustomerSlots):
    """A run that died holding a slot gets the same slot when its job comes back, even with none free."""
    held = await slots.acquire("gen-a", PASS, never_asked)
    other = await slots.acquire("gen-b", PASS, never_asked)
    assert slots.held[str(held.key)] is held
    slots.drop(held)  # the process died: nothing refreshes or releases the slot
    again = await slots.acquire("gen-a", PASS, never_asked)
    assert again.key == held.key
    await again.release("gen-a")
    await other.release("gen-b")


async def test_a_run_with_no_free_slot_waits_in_line_until_one_is_released(slots: CustomerSlots):
    """The third run joins the waiting list with its place, takes the released slot, and leaves the list."""
    first = await slots.acquire("gen-a", PASS, never_asked)
    second = await slots.acquire("gen-b", PASS, never_asked)

    async def place() -> int:
        return 7

    third = asyncio.create_task(slots.acquire("gen-c", PASS, place))
    await wait_for(lambda: waiting(slots), 5, what="gen-c on the waiting list")
    assert b"gen-c" in await waiting(slots) and not third.done()
    freed = first.key
    await first.release("gen-a")
    slot = await asyncio.wait_for(third, 5)
    assert slot.key == freed
    assert b"gen-c" not in await waiting(slots)
    await slot.release("gen-c")
    await second.release("gen-b")


async def test_free_deletes_only_the_runs_own_slot(slots: CustomerSlots):
    """With a stale revision a run still frees its own slot, and never a slot another run has taken since."""
    slot = await slots.acquire("gen-a", PASS, never_asked)
    assert slot.key is not None
    slots.drop(slot)
    await slots.free(slot.key, "gen-a", slot.revision + 1000)
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await slots.kv.get(slot.key)

    taken = await slots.acquire("gen-b", PASS, never_asked)
    assert taken.key == slot.key
    await slots.free(slot.key, "gen-a", slot.revision)
    assert (await slots.kv.get(slot.key)).value == b"gen-b"
    await taken.release("gen-b")


async def test_the_refresh_rewrites_held_slots_and_recovers_a_stale_revision(slots: CustomerSlots):
    """One loop refreshes every held slot (compare-and-set on the revision it wrote); after a write it did
    not see, it reads the slot and refreshes it only while it still names its run."""
    slot = await slots.acquire("gen-a", PASS, never_asked)
    assert slot.key is not None and slots.refresher is not None and not slots.refresher.done()
    before = slot.revision
    await slots._refresh_batch([slot])
    assert slot.revision > before and (await slots.kv.get(slot.key)).value == b"gen-a"
    await slots.kv.put(slot.key, b"gen-a")  # a refresh whose answer was lost
    await slots._refresh_batch([slot])
    entry = await slots.kv.get(slot.key)
    assert slot.revision == entry.revision and entry.value == b"gen-a"
    key = slot.key
    await slot.release("gen-a")
    assert not slots.held
    with pytest.raises(nats.js.errors.KeyNotFoundError):
        await slots.kv.get(key)
