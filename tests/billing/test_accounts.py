"""Billing's request/reply calls on the real ledger: welcome, Shopify top-ups, admin, prices."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac

import orjson
import pytest

from libs.errors import InvalidInputError, UnauthorizedError
from libs.schemas import (
    AdjustResult,
    AdminAdjust,
    CustomerView,
    EnsureWelcome,
    PriceList,
    Prices,
    ShopifyOrder,
    ShopifyOrderResult,
)
from tests.billing.support import balance_of, credit_rows, new_pass

SECRET = "test-shopify-secret-71aa"


def shopify_order(raw: bytes, secret: str = SECRET) -> ShopifyOrder:
    signature = base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest()).decode()
    return ShopifyOrder(raw_body_b64=base64.b64encode(raw).decode(), hmac_header=signature, request_id="req-1")


def order_body(order_id: int | None, pass_id: str, sku: str = "MINA-50", quantity: int = 1) -> bytes:
    order: dict[str, object] = {
        "note_attributes": [{"name": "mina_pass_id", "value": pass_id}],
        "customer": {"id": 777, "email": "buyer@example.com"},
        "line_items": [{"sku": sku, "quantity": quantity}, {"sku": "TOTE-BAG", "quantity": 1}],
    }
    if order_id is not None:
        order["id"] = order_id
    return orjson.dumps(order)


async def test_welcome_credits_are_given_once_per_pass_id(bus, services, ledger, db):
    """Two concurrent EnsureWelcome calls and a later one give one welcome row of 5 credits."""
    await services.start("billing", welcome_credits=5)
    pass_id = new_pass()
    first, second = await asyncio.gather(*(bus.request(EnsureWelcome(pass_id=pass_id), CustomerView)
                                           for _ in range(2)))
    again = await bus.request(EnsureWelcome(pass_id=pass_id), CustomerView)
    assert {first.credits, second.credits, again.credits} == {5}
    rows = await credit_rows(db, pass_id)
    assert [(r["mg_delta"], r["mg_reason"]) for r in rows] == [(5, "welcome")]
    assert await balance_of(db, pass_id) == 5


async def test_zero_welcome_credits_creates_the_customer_with_nothing(bus, services, ledger, db):
    """MMA_WELCOME_CREDITS=0 ensures the row and writes no credit row."""
    await services.start("billing")
    pass_id = new_pass()
    view = await bus.request(EnsureWelcome(pass_id=pass_id), CustomerView)
    assert view.credits == 0 and view.pass_id == pass_id
    assert await credit_rows(db, pass_id) == []


async def test_a_shopify_order_is_credited_once_and_verified(bus, services, ledger, db):
    """Good HMAC credits SKU × quantity once; a replay is already processed; a bad HMAC is refused."""
    await services.start("billing", credit_expiry_days=30, credit_product_map='{"MINA-50": 50, "MINA-10": 10}')
    pass_id = new_pass()
    raw = order_body(9001, pass_id, quantity=2)

    result = await bus.request(shopify_order(raw), ShopifyOrderResult)
    assert (result.order_id, result.pass_id, result.credited, result.balance) == ("9001", pass_id, 100, 100)
    assert result.expires_at is not None and not result.already_processed

    replay = await bus.request(shopify_order(raw), ShopifyOrderResult)
    assert replay.already_processed and replay.order_id == "9001"
    rows = await credit_rows(db, pass_id)
    assert [(r["mg_delta"], r["mg_source"], r["mg_ref_id"]) for r in rows] == [(100, "shopify", "9001")]

    with pytest.raises(UnauthorizedError) as bad:
        await bus.request(shopify_order(raw, secret="not-the-secret"), ShopifyOrderResult)
    assert bad.value.instance_code == "INVALID_HMAC"
    unsigned = ShopifyOrder(raw_body_b64=base64.b64encode(raw).decode(), hmac_header=None)
    with pytest.raises(UnauthorizedError):
        await bus.request(unsigned, ShopifyOrderResult)
    assert await balance_of(db, pass_id) == 100


async def test_a_shopify_order_with_no_pack_or_no_id_credits_nothing(bus, services, ledger, db):
    """No matching SKU answers credited 0 NO_MATCHING_PRODUCT; no order id is MISSING_ORDER_ID."""
    await services.start("billing")
    pass_id = new_pass()
    result = await bus.request(shopify_order(order_body(9002, pass_id, sku="T-SHIRT")), ShopifyOrderResult)
    assert (result.credited, result.reason, result.order_id) == (0, "NO_MATCHING_PRODUCT", "9002")
    with pytest.raises(InvalidInputError) as missing:
        await bus.request(shopify_order(order_body(None, pass_id)), ShopifyOrderResult)
    assert missing.value.instance_code == "MISSING_ORDER_ID"
    assert await credit_rows(db, pass_id) == []


async def test_an_admin_adjustment_writes_an_audit_row(bus, services, ledger, db):
    """+7 moves 0 -> 7 with an admin_audit row; going below 0 is INVALID_AMOUNT and changes nothing."""
    await services.start("billing")
    pass_id = new_pass()
    result = await bus.request(AdminAdjust(pass_id=pass_id, delta=7, reason="goodwill", actor="ops@mina"),
                               AdjustResult)
    assert (result.credits_before, result.credits_after) == (0, 7)
    audits = await db.fetch(
        "select mg_detail, mg_meta, mg_payload from mega_admin where mg_record_type = 'admin_audit'"
    )
    assert len(audits) == 1 and pass_id in str(dict(audits[0]))

    with pytest.raises(InvalidInputError) as below:
        await bus.request(AdminAdjust(pass_id=pass_id, delta=-100), AdjustResult)
    assert below.value.instance_code == "INVALID_AMOUNT"
    assert await balance_of(db, pass_id) == 7
    assert [r["mg_source"] for r in await credit_rows(db, pass_id)] == ["admin"]


async def test_prices_come_from_settings(bus, services):
    """PriceList answers the configured prices (1/1/5/5 by default, overridable)."""
    await services.start("billing", price_video_tweak=4)
    prices = await bus.request(PriceList(), Prices)
    assert prices == Prices(still_create=1, still_tweak=1, video_animate=5, video_tweak=4)
