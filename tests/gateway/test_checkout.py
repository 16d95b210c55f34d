"""The purchase loop over HTTP: checkout on a local Shopify, the paid-order webhook, the balance."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from libs.settings import Settings
from tests.conftest import Services
from tests.gateway.support import shopify_sign, user_token
from tests.wire.shopify_admin import MINA_50_VARIANT, MINA_5000_VARIANT, ShopifyAdminServer

TOKEN = "shpat_gateway_checkout_1"
WEBHOOK_SECRET = "test-shopify-secret-71aa"  # tests/conftest.py settings


@pytest.fixture
def shop() -> Iterator[ShopifyAdminServer]:
    with ShopifyAdminServer(token=TOKEN) as server:
        assert isinstance(server, ShopifyAdminServer)
        yield server


def buyer(settings: Settings, email: str | None = "buyer@example.com", verified: bool = True) -> dict[str, str]:
    """A signed-in buyer's headers, as the frontend sends them (Bearer + X-Mina-Pass-Id)."""
    uid = str(uuid.uuid4())
    token = user_token(settings, uid, email, verified=verified)
    return {"Authorization": f"Bearer {token}", "X-Mina-Pass-Id": f"pass:user:{uid}"}


async def webhook(client: httpx.AsyncClient, order: dict[str, Any]) -> httpx.Response:
    raw = orjson.dumps(order)
    return await client.post("/api/credits/shopify-order", content=raw,
                             headers={"X-Shopify-Hmac-Sha256": shopify_sign(raw, WEBHOOK_SECRET),
                                      "Content-Type": "application/json"})


async def balance(client: httpx.AsyncClient, headers: dict[str, str]) -> int:
    r = await client.get("/credits/balance", headers=headers)
    assert r.status_code == 200, r.text
    return int(r.json()["balance"])


async def test_a_purchase_is_credited_once_to_the_buyer_who_checked_out(services: Services, settings: Settings,
                                                                      shop: ShopifyAdminServer) -> None:
    """Checkout → the shop's draft order carries the pass id → paid → the webhook credits it once → balance."""
    await services.start_all(welcome_credits=20, shopify_store_domain=shop.domain, shopify_admin_token=TOKEN)
    headers = buyer(settings)
    pass_id = headers["X-Mina-Pass-Id"]
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30.0) as client:
        before = await balance(client, headers)
        assert before == 20  # the welcome credits

        r = await client.post("/api/checkout/create", headers=headers, json={"qty": 2})
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["ok"] is True and isinstance(out["draftOrderId"], int)
        draft = shop.draft_orders[out["draftOrderId"]]
        assert out["checkoutUrl"] == draft["invoice_url"]
        assert (await client.get(out["checkoutUrl"])).status_code == 200  # the buyer can open the invoice
        sent = shop.bodies("create_draft_order")[-1]["draft_order"]
        assert sent["line_items"] == [{"variant_id": MINA_50_VARIANT, "quantity": 2}]
        assert sent["note_attributes"] == [{"name": "mina_pass_id", "value": pass_id}]
        assert sent["email"] == "buyer@example.com" and sent["use_customer_default_address"] is True

        order = shop.pay(out["draftOrderId"])  # the buyer pays the invoice; Shopify sends orders/paid
        paid = await webhook(client, order)
        assert paid.status_code == 200, paid.text
        p = paid.json()
        assert (p["ok"], p["passId"], p["credited"], p["balance"]) == (True, pass_id, 100, 120)
        assert await balance(client, headers) == 120

        again = await webhook(client, order)  # Shopify retries a webhook: nothing changes
        assert again.status_code == 200 and again.json()["alreadyProcessed"] is True
        assert await balance(client, headers) == 120

        # the 100-pack button: the 5000 pack once, credited 5000
        big = (await client.post("/api/checkout/create", headers=headers, json={"qty": 100})).json()
        assert shop.bodies("create_draft_order")[-1]["draft_order"]["line_items"] == \
            [{"variant_id": MINA_5000_VARIANT, "quantity": 1}]
        assert (await webhook(client, shop.pay(big["draftOrderId"]))).json()["credited"] == 5000
        assert await balance(client, headers) == 5120


async def test_checkout_failures_answer_what_the_frontend_expects(services: Services, settings: Settings,
                                                                shop: ShopifyAdminServer) -> None:
    """Shop away → 503 + Retry-After; shop refusing → 500 CHECKOUT_FAILED; bad qty → 400; unverified email unsent;
    shop unreachable → 503 SHOPIFY_UNREACHABLE + Retry-After (the frontend falls back to its cart link on any)."""
    started = await services.start_all(welcome_credits=0, shopify_store_domain=shop.domain,
                                       shopify_admin_token=TOKEN)
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30.0) as client:
        anon = {"X-Mina-Pass-Id": f"pass:anon:{uuid.uuid4()}"}
        shop.fail("create_draft_order", 503)
        away = await client.post("/api/checkout/create", headers=anon, json={"qty": 1})
        assert away.status_code == 503 and away.headers.get("retry-after")
        assert away.json()["ok"] is False and away.json()["error"] == "CHECKOUT_FAILED"
        shop.fail("create_draft_order", 401)
        refused = await client.post("/api/checkout/create", headers=anon, json={"qty": 1})
        assert refused.status_code == 500
        assert (refused.json()["error"], refused.json()["message"]) == ("CHECKOUT_FAILED", "SHOPIFY_401")
        bad = await client.post("/api/checkout/create", headers=anon, json={"qty": "lots"})
        assert bad.status_code == 400 and bad.json()["error"] == "INVALID_QTY"

        ok = await client.post("/api/checkout/create", headers=anon, json={})  # no qty: one pack, anonymous works
        assert ok.status_code == 200 and ok.json()["ok"] is True
        assert shop.bodies("create_draft_order")[-1]["draft_order"]["line_items"][0]["quantity"] == 1
        unverified = buyer(settings, "someone@example.com", verified=False)
        r = await client.post("/api/checkout/create", headers=unverified, json={"qty": "3", "email": "x@y.z"})
        assert r.status_code == 200, r.text
        sent = shop.bodies("create_draft_order")[-1]["draft_order"]
        assert "email" not in sent and sent["line_items"][0]["quantity"] == 3

        back = await client.get("/checkout/return", follow_redirects=False)
        assert back.status_code == 302
        assert back.headers["location"] == "https://mina.faltastudio.com?checkout=complete"

        await started["billing"].stop()
        await services.start("billing", welcome_credits=0)  # the tests' default shop: nobody listening
        down = await client.post("/api/checkout/create", headers=anon, json={"qty": 1})
        assert down.status_code == 503 and down.headers.get("retry-after")
        assert (down.json()["ok"], down.json()["error"], down.json()["message"]) == \
            (False, "CHECKOUT_FAILED", "SHOPIFY_UNREACHABLE")
