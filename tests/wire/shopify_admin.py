"""The test shop: libs/offline_shop.py's `OfflineShop` (the Admin REST API of draft orders, invoice
pages, paying) behind the wire server's fault injection and counters.

Routes: `create_draft_order` (POST /admin/api/<version>/draft_orders.json), `invoice`
(GET /<shop id>/invoices/<token>, the page `invoice_url` points at) and `pay_invoice` (its Pay
button). `pay(draft_order_id)` completes a draft order as a buyer paying the invoice would and
returns the paid order as the `orders/paid` webhook carries it; this shop sends no webhook itself
(the test posts it). Faults come from WireServer (`fail("create_draft_order", 503)` or `401`).
"""

from __future__ import annotations

from typing import Any

from libs.offline_shop import MINA_50_VARIANT, MINA_5000_VARIANT, SHOP_ID, VARIANTS, OfflineShop, Variants
from tests.wire.base import Response, WireServer

__all__ = ["MINA_50_VARIANT", "MINA_5000_VARIANT", "SHOP_ID", "ShopifyAdminServer"]


class ShopifyAdminServer(WireServer):
    def __init__(self, token: str = "shpat_test_admin_token", api_version: str = "2025-10",
                 variants: Variants | None = None) -> None:
        super().__init__()
        self.shop = OfflineShop(token, api_version, variants or VARIANTS)

    def start(self) -> ShopifyAdminServer:
        super().start()
        self.shop.base_url = self.url
        return self

    @property
    def domain(self) -> str:
        """The value for `MMA_SHOPIFY_STORE_DOMAIN` (a URL, since this shop speaks plain HTTP)."""
        return self.url

    @property
    def draft_orders(self) -> dict[int, dict[str, Any]]:
        return self.shop.draft_orders

    @property
    def orders(self) -> dict[int, dict[str, Any]]:
        return self.shop.orders

    def route(self, method: str, path: str) -> str | None:
        return self.shop.route(method, path)

    def handle(self, route: str, method: str, path: str, body: Any) -> Response:
        return self.shop.handle(route, path, self.request_headers(), body)

    def pay(self, draft_order_id: int, email: str = "buyer@example.com",
            customer_id: int = 7_700_001) -> dict[str, Any]:
        return self.shop.pay(draft_order_id, email, customer_id)
