"""Checkout: billing creates a Shopify draft order on a local shop speaking the Admin REST API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from libs.errors import ConfigError, InvalidInputError, MmaError, ServiceUnavailableError
from libs.schemas import CheckoutCreated, CreateCheckout
from libs.settings import Settings
from services.billing.adapters.protocols import DraftOrderRequest
from services.billing.adapters.shopify_admin import ShopifyAdmin, admin_base_url, draft_order_body
from services.billing.checkout import line_item, quantity
from tests.billing.support import new_pass
from tests.conftest import ServiceProcess, Services
from tests.helpers import wait_for
from tests.wire.shopify_admin import MINA_50_VARIANT, MINA_5000_VARIANT, ShopifyAdminServer

TOKEN = "shpat_checkout_test_1"


@pytest.fixture
def shop() -> Iterator[ShopifyAdminServer]:
    with ShopifyAdminServer(token=TOKEN) as server:
        assert isinstance(server, ShopifyAdminServer)
        yield server


def shop_settings(shop: ShopifyAdminServer, **extra: Any) -> dict[str, Any]:
    return {"shopify_store_domain": shop.domain, "shopify_admin_token": TOKEN, **extra}


# --------------------------------------------------------------------------- the rules, without a bus


def test_quantity_is_floored_and_clamped_to_1_100() -> None:
    """floor(qty) within 1..100: 2.9 is 2, 0 and negatives are 1, past 100 is 100; NaN is refused."""
    assert [quantity(v) for v in (1, 2.9, 0, -4, 10, 99.99, 100, 101, 1e300, float("inf"))] == \
        [1, 2, 1, 1, 10, 99, 100, 100, 100, 100]
    with pytest.raises(InvalidInputError) as err:
        quantity(float("nan"))
    assert err.value.instance_code == "INVALID_QTY"


def test_a_hundred_packs_is_the_5000_pack_once_anything_less_is_mina_50() -> None:
    """qty 100 → the 5000 variant × 1; qty n < 100 → the MINA-50 variant × n (UPSTREAM.md 2.1)."""
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert line_item(100, settings) == (44184397283411, 1)
    assert line_item(1, settings) == (43328351928403, 1)
    assert line_item(10, settings) == (43328351928403, 10)


def test_the_draft_order_body_carries_the_pass_id_and_only_a_known_email() -> None:
    """One line, the `mina_pass_id` note attribute, the default address; `email` only when given."""
    body = draft_order_body(DraftOrderRequest(variant_id=7, quantity=2, pass_id="pass:user:u1", email="a@b.co"))
    assert body == {"draft_order": {"line_items": [{"variant_id": 7, "quantity": 2}],
                                    "note_attributes": [{"name": "mina_pass_id", "value": "pass:user:u1"}],
                                    "use_customer_default_address": True, "email": "a@b.co"}}
    assert "email" not in draft_order_body(DraftOrderRequest(variant_id=7, quantity=1, pass_id="p"))["draft_order"]
    assert admin_base_url("mina.myshopify.com") == "https://mina.myshopify.com"
    assert admin_base_url("http://127.0.0.1:9/") == "http://127.0.0.1:9"


# --------------------------------------------------------------------------- billing on the bus


async def test_a_checkout_is_a_draft_order_on_the_shop(bus, services: Services, ledger, shop) -> None:
    """The shop sees the token, the version, MINA-50 × qty and the pass id; the buyer gets its invoice URL."""
    await services.start("billing", **shop_settings(shop))
    pass_id = new_pass()
    created = await bus.request(CreateCheckout(pass_id=pass_id, qty=2.6, email="buyer@example.com"),
                                CheckoutCreated)
    assert (created.variant_id, created.quantity) == (MINA_50_VARIANT, 2)
    assert created.draft_order_id in shop.draft_orders
    assert created.checkout_url == shop.draft_orders[created.draft_order_id]["invoice_url"]
    sent = shop.bodies("create_draft_order")[-1]["draft_order"]
    assert sent["line_items"] == [{"variant_id": MINA_50_VARIANT, "quantity": 2}]
    assert sent["note_attributes"] == [{"name": "mina_pass_id", "value": pass_id}]
    assert sent["use_customer_default_address"] is True and sent["email"] == "buyer@example.com"
    async with httpx.AsyncClient() as http:  # the buyer can open the invoice page
        page = await http.get(created.checkout_url)
    assert page.status_code == 200 and "Invoice" in page.text
    assert "<link rel='icon' href='data:,'>" in page.text  # no /favicon.ico 404 in the buyer's console

    big = await bus.request(CreateCheckout(pass_id=pass_id, qty=100), CheckoutCreated)
    assert (big.variant_id, big.quantity) == (MINA_5000_VARIANT, 1)
    assert "email" not in shop.bodies("create_draft_order")[-1]["draft_order"]


async def test_a_shop_away_is_retryable_and_a_refusal_is_checkout_failed(bus, services: Services, ledger,
                                                                         shop) -> None:
    """503/429/unreachable → ServiceUnavailableError; 401 and a wrong API version → CHECKOUT_FAILED SHOPIFY_<status>."""
    await services.start("billing", **shop_settings(shop))
    req = CreateCheckout(pass_id=new_pass(), qty=1)
    shop.fail("create_draft_order", 503)
    with pytest.raises(ServiceUnavailableError) as away:
        await bus.request(req, CheckoutCreated)
    assert away.value.message == "SHOPIFY_503"
    shop.fail("create_draft_order", 401)
    with pytest.raises(MmaError) as refused:
        await bus.request(req, CheckoutCreated)
    assert (refused.value.instance_code, refused.value.message) == ("CHECKOUT_FAILED", "SHOPIFY_401")
    assert not isinstance(refused.value, ServiceUnavailableError)
    assert len(shop.draft_orders) == 0
    assert (await bus.request(req, CheckoutCreated)).quantity == 1  # the shop is back: it works again


async def test_a_wrong_api_version_or_token_is_refused_by_the_shop(bus, services: Services, ledger, shop) -> None:
    """The shop checks the version in the path and the token header: both refusals reach the caller."""
    first = await services.start("billing", **shop_settings(shop, shopify_api_version="2019-01"))
    with pytest.raises(MmaError) as err:
        await bus.request(CreateCheckout(pass_id=new_pass()), CheckoutCreated)
    assert (err.value.instance_code, err.value.message) == ("CHECKOUT_FAILED", "SHOPIFY_404")
    await first.stop()
    await services.start("billing", **shop_settings(shop, shopify_admin_token="shpat_wrong"))
    with pytest.raises(MmaError) as err:
        await bus.request(CreateCheckout(pass_id=new_pass()), CheckoutCreated)
    assert (err.value.instance_code, err.value.message) == ("CHECKOUT_FAILED", "SHOPIFY_401")
    assert len(shop.draft_orders) == 0


def test_without_a_shop_there_is_no_shop_client_but_a_startup_error_naming_the_settings() -> None:
    """A missing domain or token is a ConfigError naming the MMA_SHOPIFY_* setting(s), never a client."""
    for domain, token, named in ((None, None, "MMA_SHOPIFY_STORE_DOMAIN and MMA_SHOPIFY_ADMIN_TOKEN"),
                                 ("mina.myshopify.com", None, "set MMA_SHOPIFY_ADMIN_TOKEN "),
                                 ("", "shpat_x", "set MMA_SHOPIFY_STORE_DOMAIN ")):
        settings = Settings(_env_file=None, shopify_store_domain=domain, shopify_admin_token=token)  # type: ignore[call-arg]
        with pytest.raises(ConfigError) as err:
            ShopifyAdmin.from_settings(settings)
        assert err.value.instance_code == "SHOP_NOT_CONFIGURED" and named in err.value.message


async def test_billing_without_a_shop_does_not_start_and_a_shop_down_is_said_so(bus, services: Services,
                                                                                ledger) -> None:
    """No shop settings → billing exits 2 with `service.config_error` (no traceback); the tests' default
    shop address has nobody listening → SHOPIFY_UNREACHABLE, the retryable dependency-down answer."""
    proc = ServiceProcess("billing", services.env(shopify_store_domain="", shopify_admin_token=""),
                          services.log_dir / "billing-no-shop.log")
    proc.start()
    services.procs.append(proc)
    await wait_for(lambda: not proc.is_running, 30.0, what="billing without a shop to exit")
    assert proc.proc is not None and proc.proc.returncode == 2
    refused = [e for e in proc.log_lines() if e.get("event") == "service.config_error"]
    assert refused and "MMA_SHOPIFY_STORE_DOMAIN" in refused[0]["error"], proc.log_text()[-2000:]
    assert "Traceback" not in proc.log_text() and proc.ready_count() == 0
    await services.start("billing")
    with pytest.raises(ServiceUnavailableError) as down:
        await bus.request(CreateCheckout(pass_id=new_pass()), CheckoutCreated)
    assert down.value.message == "SHOPIFY_UNREACHABLE"
