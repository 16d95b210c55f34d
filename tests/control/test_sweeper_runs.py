"""The stuck sweeper against real runs: it cancels a stuck run and its prediction, and leaves waiters alone."""

from __future__ import annotations

from typing import Any

import httpx

from libs.bus import Bus
from libs.schemas import GenerationFailed, MmaStatus
from tests.conftest import Services
from tests.control.support import create, credit_deltas, events, failed_event, new_pass, reached
from tests.helpers import wait_for
from tests.wire import ReplicateServer


def logged(services: Services, event: str, generation_id: str) -> list[dict[str, Any]]:
    return [e for p in services.procs for e in p.log_lines()
            if e.get("event") == event and e.get("generation_id") == generation_id]


async def test_a_stuck_run_is_cancelled_with_its_prediction_and_a_slot_waiter_is_left_alone(
    services: Services, bus: Bus, db, slow_replicate: ReplicateServer
) -> None:
    """A's prediction hangs: the sweeper cancels the run (and the prediction) and it ends STUCK_TIMEOUT,
    refunded once; B, waiting for the customer's only slot meanwhile, is skipped, never failed."""
    await services.start_all(welcome_credits=5, provider="replicate", replicate_api_token="r8-test",
                             replicate_base_url=slow_replicate.url, provider_poll_interval_s=0.1,
                             max_running_per_customer=1, stuck_after_s=3, stuck_after_video_s=600,
                             sweep_interval_s=0.3, sweep_cancel_wait_s=20)
    pass_id = new_pass()
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30) as client:
        first = await create(client, pass_id)
        await reached(bus, first, "generating")
        second = await create(client, pass_id)
        await wait_for(lambda: slow_replicate.count("create_prediction") == 1, 20, what="A's prediction")
        # A shows progress after B was queued, so B turns stuck-old while A still holds the slot: the
        # sweeper must meet B waiting (and skip it) before it stops A, whatever the machine's speed
        await wait_for(lambda: _queued(db, second), 20, what="B's row")
        await db.execute("update mega_generations set mg_updated_at = now() + interval '2 seconds' "
                         "where mg_id = $1", f"generation:{first}")

        ended = await failed_event(bus, first, timeout=60)
        assert ended.status is MmaStatus.ERROR and ended.code == "STUCK_TIMEOUT"
        assert ended.detail["requested_by"] == "sweeper" and ended.detail["run_cancelled"] is True
        assert ended.detail["prediction_cancelled"] is True and ended.detail["cancelled_phase"] == "generating"
        assert slow_replicate.count("cancel_prediction") == 1
        assert not [m for _s, m in await events(bus, second) if isinstance(m, GenerationFailed)]
        skipped = [e for e in logged(services, "billing.sweep_skipped", second) if e["reason"] == "waiting_for_slot"]
        assert skipped, "B was never considered while it waited"

        await wait_for(lambda: _deltas_are(db, first, [-1, 1]), 15, what="A's refund")
        swept = logged(services, "billing.generation_swept", first)
        assert [e["outcome"] for e in swept] == ["run_cancelled"]
        state = (await client.get(f"/mma/generations/{first}")).json()
        assert state["state"] == "error" and state["error"]["code"] == "STUCK_TIMEOUT"


async def _queued(db: Any, generation_id: str) -> bool:
    return await db.fetchval("select count(*) from mega_generations where mg_id = $1",
                             f"generation:{generation_id}") == 1


async def _deltas_are(db: Any, generation_id: str, expected: list[int]) -> bool:
    return sorted(await credit_deltas(db, generation_id)) == sorted(expected)
