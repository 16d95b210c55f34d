"""A local shop speaking the Shopify Admin REST API of draft orders, and paying them.

Routes: `create_draft_order` (POST /admin/api/<version>/draft_orders.json) and `invoice`
(GET /<shop id>/invoices/<token>, the page `invoice_url` points at).

It checks what Shopify checks: the `X-Shopify-Access-Token` (401 otherwise), the API version
in the path (404 for another one), a JSON body (415) holding a `draft_order` with line items of
known variants and positive quantities (422 with Shopify's `{"errors": {field: [..]}}`). A draft
order answers 201 with its id and invoice URL. `pay(draft_order_id)` completes it as a buyer
paying the invoice would, and returns the paid order as the `orders/paid` webhook carries it
(its line items' SKUs, the draft's note attributes, the buyer). Faults come from WireServer
(`fail("create_draft_order", 503)` or `401`).
"""

from __future__ import annotations

import itertools
import re
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from tests.wire.base import Response, WireServer, json_response

MINA_50_VARIANT = 43328351928403
MINA_5000_VARIANT = 44184397283411
VARIANTS: dict[int, tuple[str, str, str]] = {  # variant id -> (sku, title, unit price)
    MINA_50_VARIANT: ("MINA-50", "Mina matcha ×50", "15.00"),
    MINA_5000_VARIANT: ("MINA-5000", "Mina matcha ×5000", "1250.00"),
}
CREATE_PATH = re.compile(r"/admin/api/(?P<version>[^/]+)/draft_orders\.json")
SHOP_ID = "71234567890"


class ShopifyAdminServer(WireServer):
    def __init__(self, token: str = "shpat_test_admin_token", api_version: str = "2025-10",
                 variants: dict[int, tuple[str, str, str]] | None = None) -> None:
        super().__init__()
        self.token = token
        self.api_version = api_version
        self.variants = dict(variants or VARIANTS)
        self.draft_orders: dict[int, dict[str, Any]] = {}
        self.orders: dict[int, dict[str, Any]] = {}
        self._ids = itertools.count(1_000_000_001)
        self._order_ids = itertools.count(5_000_000_001)
        self._dlock = threading.Lock()

    @property
    def domain(self) -> str:
        """The value for `MMA_SHOPIFY_STORE_DOMAIN` (a URL, since this shop speaks plain HTTP)."""
        return self.url

    def route(self, method: str, path: str) -> str | None:
        if method == "POST" and path.startswith("/admin/api/") and path.endswith("/draft_orders.json"):
            return "create_draft_order"
        if method == "GET" and re.fullmatch(rf"/{SHOP_ID}/invoices/[0-9a-f]+", path):
            return "invoice"
        return None

    # ------------------------------------------------------------------ wire

    def handle(self, route: str, method: str, path: str, body: Any) -> Response:
        if route == "invoice":
            return self._invoice(path)
        headers = self.request_headers()
        if headers.get("x-shopify-access-token") != self.token:
            return json_response(401, {"errors": "[API] Invalid API key or access token (unrecognized login or "
                                                 "wrong password)"})
        match = CREATE_PATH.fullmatch(path)
        if match is None or match.group("version") != self.api_version:
            return json_response(404, {"errors": "Not Found"})
        if "application/json" not in headers.get("content-type", ""):
            return json_response(415, {"errors": "Unsupported Media Type"})
        errors = self._invalid(body)
        if errors:
            return json_response(422, {"errors": errors})
        return json_response(201, {"draft_order": self._create(body["draft_order"])})

    def _invalid(self, body: Any) -> dict[str, list[str]]:
        draft = body.get("draft_order") if isinstance(body, dict) else None
        if not isinstance(draft, dict):
            return {"draft_order": ["Required parameter missing or invalid"]}
        lines = draft.get("line_items")
        if not isinstance(lines, list) or not lines:
            return {"line_items": ["can't be blank"]}
        for line in lines:
            if not isinstance(line, dict) or line.get("variant_id") not in self.variants:
                return {"line_items": ["variant not found"]}
            qty = line.get("quantity")
            if not isinstance(qty, int) or isinstance(qty, bool) or qty < 1:
                return {"line_items": ["quantity must be greater than or equal to 1"]}
        attributes = draft.get("note_attributes", [])
        if not isinstance(attributes, list) or not all(
                isinstance(a, dict) and isinstance(a.get("name"), str) for a in attributes):
            return {"note_attributes": ["is invalid"]}
        if "email" in draft and not (isinstance(draft["email"], str) and "@" in draft["email"]):
            return {"email": ["is invalid"]}
        if not isinstance(draft.get("use_customer_default_address", False), bool):
            return {"use_customer_default_address": ["is invalid"]}
        return {}

    def _create(self, draft: dict[str, Any]) -> dict[str, Any]:
        with self._dlock:
            draft_id = next(self._ids)
            token = uuid.uuid4().hex
            lines = []
            for line in draft["line_items"]:
                sku, title, price = self.variants[line["variant_id"]]
                lines.append({"variant_id": line["variant_id"], "quantity": line["quantity"], "sku": sku,
                              "title": title, "price": price})
            total = sum(float(line["price"]) * line["quantity"] for line in lines)
            order = {
                "id": draft_id, "name": f"#D{draft_id % 10_000}", "status": "open", "currency": "GBP",
                "email": draft.get("email"), "line_items": lines,
                "note_attributes": list(draft.get("note_attributes", [])), "total_price": f"{total:.2f}",
                "invoice_url": f"{self.url}/{SHOP_ID}/invoices/{token}", "order_id": None,
                "created_at": datetime.now(UTC).isoformat(),
            }
            self.draft_orders[draft_id] = order
            return dict(order)

    def _invoice(self, path: str) -> Response:
        with self._dlock:
            found = next((d for d in self.draft_orders.values() if d["invoice_url"].endswith(path)), None)
        if found is None:
            return 404, {"Content-Type": "text/html"}, b"<h1>Invoice not found</h1>"
        page = f"<h1>Invoice {found['name']}</h1><p>Total GBP {found['total_price']}</p>"
        return 200, {"Content-Type": "text/html; charset=utf-8"}, page.encode()

    # ------------------------------------------------------------------ the buyer

    def pay(self, draft_order_id: int, email: str = "buyer@example.com",
            customer_id: int = 7_700_001) -> dict[str, Any]:
        """Complete the draft order (paid) and return the paid order as its webhook carries it.
        Paying it again returns the same order (one draft order becomes one order)."""
        with self._dlock:
            draft = self.draft_orders[draft_order_id]
            if draft["order_id"] is not None:
                return dict(self.orders[draft["order_id"]])
            order_id = next(self._order_ids)
            buyer = draft.get("email") or email
            order = {
                "id": order_id, "name": f"#{order_id % 100_000}", "email": buyer, "contact_email": buyer,
                "financial_status": "paid", "currency": "GBP", "total_price": draft["total_price"],
                "line_items": [dict(line) for line in draft["line_items"]],
                "note_attributes": list(draft["note_attributes"]),
                "customer": {"id": customer_id, "email": buyer},
                "source_name": "shopify_draft_order", "created_at": datetime.now(UTC).isoformat(),
            }
            draft.update(status="completed", order_id=order_id)
            self.orders[order_id] = order
            return dict(order)
