"""Welcome credits do not depend on the gateway's welcome call answering at the moment of a first create."""

from __future__ import annotations

from typing import Any

import httpx

from tests.billing.support import balance_of, credit_rows
from tests.conftest import Services
from tests.helpers import wait_for


async def test_a_first_create_while_billing_is_down_is_queued_and_welcomed_on_arrival(
        services: Services, db: Any) -> None:
    """Billing down: the create answers 200 queued (not 500); billing, once up, welcomes then charges."""
    common: dict[str, Any] = {"welcome_credits": 20, "decision_timeout_s": 1.0}
    for name in ("ledger", "pipeline", "gateway"):
        await services.start(name, **common)
    pass_id = "pass:anon:welcome-late-1"
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30.0) as client:
        r = await client.post("/mma/still/create", headers={"X-Mina-Pass-Id": pass_id},
                              json={"inputs": {"brief": "a vase", "aspect_ratio": "1:1"}})
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "queued"
        gid = r.json()["generation_id"]

    await services.start("billing", **common)

    async def done() -> bool:
        status = await db.fetchval("select mg_mma_status from mega_generations where mg_id = $1", f"generation:{gid}")
        return status == "done"

    await wait_for(done, 90, what="the queued create to run once billing is back")
    rows = await credit_rows(db, pass_id)
    assert sorted((r["mg_delta"], r["mg_reason"]) for r in rows) == [(-1, "still_create"), (20, "welcome")]
    assert await balance_of(db, pass_id) == 19
