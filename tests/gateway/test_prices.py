"""Billing owns prices: the gateway shows billing's, whatever its own settings say."""

from __future__ import annotations

import httpx

from tests.conftest import Services

PASS = "pass:anon:prices"


async def test_balance_and_a_402_show_billings_prices(services: Services) -> None:
    """Billing charges 3/2/7/6 while the gateway's settings keep the defaults (1/1/5/5): the
    balance's `meta` and the `costs` of a 402 are billing's."""
    await services.start("ledger")
    await services.start("billing", welcome_credits=0, price_still_create=3, price_still_tweak=2,
                         price_video_animate=7, price_video_tweak=6)
    await services.start("gateway", welcome_credits=0)
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30) as client:
        balance = await client.get("/credits/balance", headers={"X-Mina-Pass-Id": PASS})
        assert balance.status_code == 200, balance.text
        assert balance.json()["meta"] == {"imageCost": 3, "motionCost": 7}
        create = await client.post("/mma/still/create", json={"passId": PASS, "inputs": {"brief": "a cup"}})
        assert create.status_code == 402, create.text
        details = create.json()["details"]
        assert details["needed"] == 3 and details["balance"] == 0
        assert details["costs"] == {"still": 3, "video": 7, "still_create": 3, "still_tweak": 2,
                                    "video_animate": 7, "video_tweak": 6}
