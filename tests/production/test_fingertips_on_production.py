"""Fingertips over the migrated production-shaped database: an old customer's legacy balance pays for edits."""

from __future__ import annotations

from typing import Any

import httpx

from tests.conftest import Services
from tests.faults.support import ledger_caught_up, reconcile
from tests.gateway.support import ADMIN, data_url
from tests.gateway.test_fingertips import mask_png, scene_png

LEGACY = "pass:shopify:7001"  # 35 credits copied from the legacy table (the books opened them)


async def test_an_old_customer_edits_and_the_books_stay_exact(stack: Services, client: httpx.AsyncClient,
                                                              db: Any) -> None:
    """Two erasers and a failed edit on a legacy balance: one credit into the pool, exact rows, reconcile clean."""
    h = {**ADMIN, "X-Mina-Pass-Id": LEGACY}  # no user is linked to this Shopify id: the admin token speaks for it
    up = await client.post("/api/upload", files={"file": ("s.png", scene_png(), "image/png")}, headers=h)
    assert up.status_code == 200, up.text
    image = up.json()["publicUrl"]
    for _ in range(2):
        r = await client.post("/fingertips/generate", headers=h, timeout=120, json={
            "modelKey": "eraser", "inputs": {"image": image, "mask_image": data_url(mask_png())}, "passId": LEGACY})
        assert r.status_code == 200 and r.json()["status"] == "done", r.text
    gone = f"{stack.settings.assets_base_url}/uploads/missing.png"
    failed = await client.post("/fingertips/generate", headers=h, timeout=120, json={
        "modelKey": "remove_bg", "inputs": {"image": gone}, "passId": LEGACY})
    assert failed.status_code == 502 and failed.json()["refunded"] is True, failed.text

    pool = (await client.get("/fingertips/pool", headers=h)).json()
    assert (pool["pool"], pool["matchaBalance"]) == (1.0, 33)  # two refills; the failed 0.2 came back
    await ledger_caught_up(stack.settings)
    rows = await db.fetch("select mg_ref_type, mg_delta, mg_pool_delta from mega_generations "
                          "where mg_pass_id = $1 and mg_source = 'fingertips' order by mg_ref_type", LEGACY)
    assert sorted((r["mg_ref_type"], r["mg_delta"], float(r["mg_pool_delta"])) for r in rows) == [
        ("fingertips_draw", 0, -0.5), ("fingertips_draw", 0, -0.5), ("fingertips_draw", 0, -0.2),
        ("fingertips_refill", -1, 1.0), ("fingertips_refill", -1, 1.0), ("fingertips_refund", 0, 0.2)]
    assert "MEGA reconcile: OK" in reconcile(stack.settings)
