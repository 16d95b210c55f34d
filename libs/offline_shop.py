"""The offline shop: a local stand-in for Shopify's checkout, for `make up` without keys.

It speaks the Admin REST API of draft orders as billing calls it (services/billing/adapters/
shopify_admin.py): `POST /admin/api/<version>/draft_orders.json` with `X-Shopify-Access-Token`
answers 201 with the draft order and its `invoice_url` (401 for another token, 404 for another
API version, 415 without JSON, 422 with Shopify's `{"errors": {field: [..]}}` for unknown variants
or bad quantities). The invoice page (`GET /<shop id>/invoices/<token>`) lists the lines and has a
"Pay (offline shop)" button; pressing it (`POST .../pay`) completes the draft order as one paid
order, POSTs the `orders/paid` webhook signed with the webhook secret (X-Shopify-Hmac-Sha256) to
the gateway's `/api/credits/shopify-order`, and redirects the buyer to the gateway's
`/checkout/return`. Paying again re-sends the same order (billing credits an order once), so a
webhook that did not arrive is delivered by pressing Pay again.

`python -m libs.offline_shop --port P [--state FILE]` serves it on 127.0.0.1 with the token, secret
and variants of the settings (libs/devstack.py starts it when no shop is configured); the tests'
wire server (tests/wire/shopify_admin.py) wraps the same `OfflineShop` in its fault injection.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import html
import itertools
import json
import os
import re
import threading
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import structlog

from libs.httpreply import Response, handler_for, json_response
from libs.settings import Settings

log = structlog.get_logger("shop")

Variants = dict[int, tuple[str, str, str]]  # variant id -> (sku, title, unit price)

MINA_50_VARIANT = 43328351928403
MINA_5000_VARIANT = 44184397283411
VARIANTS: Variants = {
    MINA_50_VARIANT: ("MINA-50", "Mina matcha ×50", "15.00"),
    MINA_5000_VARIANT: ("MINA-5000", "Mina matcha ×5000", "1250.00"),
}
SHOP_ID = "71234567890"
CREATE_PATH = re.compile(r"/admin/api/(?P<version>[^/]+)/draft_orders\.json")
INVOICE_PATH = re.compile(rf"/{SHOP_ID}/invoices/(?P<token>[0-9a-f]+)(?P<pay>/pay)?")
FIRST_DRAFT_ID, FIRST_ORDER_ID = 1_000_000_001, 5_000_000_001


def html_response(status: int, title: str, body: str) -> Response:
    # the inline icon keeps the browser from asking for /favicon.ico (a 404 in the buyer's console)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
            f"<title>{html.escape(title)}</title></head>"
            f"<body style='font-family:sans-serif;max-width:40em;margin:2em auto'>{body}</body></html>")
    return status, {"Content-Type": "text/html; charset=utf-8"}, page.encode()


def sign(raw: bytes, secret: str) -> str:
    """The `X-Shopify-Hmac-Sha256` of a webhook body: base64 of its HMAC-SHA256 with the secret."""
    return base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest()).decode()


def variants_of(settings: Settings) -> Variants:
    """The shop's two products at the variant ids billing sends: MINA-50 (50 credits a unit) and the
    MINA-5000 pack (5000), which services/billing/shopify.py reads from the SKU."""
    return {settings.matcha_variant_id: VARIANTS[MINA_50_VARIANT],
            settings.matcha_5000_variant_id: VARIANTS[MINA_5000_VARIANT]}


class OfflineShop:
    """Draft orders, their invoices and their payment; no HTTP server of its own (see `serve`)."""

    def __init__(self, token: str, api_version: str = "2025-10", variants: Variants | None = None, *,
                 base_url: str = "", webhook_url: str | None = None, webhook_secret: str | None = None,
                 return_url: str | None = None, state_path: Path | None = None) -> None:
        self.token = token
        self.api_version = api_version
        self.variants = dict(variants or VARIANTS)
        self.base_url = base_url.rstrip("/")
        self.webhook_url, self.webhook_secret, self.return_url = webhook_url, webhook_secret, return_url
        self.state_path = state_path
        self.draft_orders: dict[int, dict[str, Any]] = {}
        self.orders: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._load()
        self._ids = itertools.count(max(self.draft_orders, default=FIRST_DRAFT_ID - 1) + 1)
        self._order_ids = itertools.count(max(self.orders, default=FIRST_ORDER_ID - 1) + 1)

    # ------------------------------------------------------------------ state (kept across restarts)

    def _load(self) -> None:
        if self.state_path is None or not self.state_path.exists():
            return
        data = json.loads(self.state_path.read_text())
        self.draft_orders = {int(k): v for k, v in data.get("draft_orders", {}).items()}
        self.orders = {int(k): v for k, v in data.get("orders", {}).items()}

    def _save(self) -> None:
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"draft_orders": self.draft_orders, "orders": self.orders}, indent=1))
        tmp.replace(self.state_path)

    # ------------------------------------------------------------------ wire

    def route(self, method: str, path: str) -> str | None:
        if method == "POST" and path.startswith("/admin/api/") and path.endswith("/draft_orders.json"):
            return "create_draft_order"
        invoice = INVOICE_PATH.fullmatch(path)
        if invoice is not None and method == ("POST" if invoice.group("pay") else "GET"):
            return "pay_invoice" if invoice.group("pay") else "invoice"
        return None

    def handle(self, route: str, path: str, headers: Mapping[str, str], body: Any) -> Response:
        """Answer a routed request; `headers` lower-cased, `body` the parsed JSON (or raw bytes)."""
        if route == "invoice":
            return self._invoice(path)
        if route == "pay_invoice":
            return self._pay_invoice(path)
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
        return json_response(201, {"draft_order": self.create(body["draft_order"])})

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

    def create(self, draft: dict[str, Any]) -> dict[str, Any]:
        """A valid draft order's record, as the Admin API answers it."""
        with self._lock:
            draft_id = next(self._ids)
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
                "invoice_url": f"{self.base_url}/{SHOP_ID}/invoices/{uuid.uuid4().hex}", "order_id": None,
                "created_at": datetime.now(UTC).isoformat(),
            }
            self.draft_orders[draft_id] = order
            self._save()
            return dict(order)

    def _draft_at(self, path: str) -> dict[str, Any] | None:
        invoice = INVOICE_PATH.fullmatch(path)
        suffix = f"/{SHOP_ID}/invoices/{invoice.group('token')}" if invoice else None
        with self._lock:
            return next((d for d in self.draft_orders.values() if suffix and d["invoice_url"].endswith(suffix)),
                        None)

    def _invoice(self, path: str) -> Response:
        draft = self._draft_at(path)
        if draft is None:
            return html_response(404, "Invoice not found", "<h1>Invoice not found</h1>")
        rows = "".join(
            f"<tr><td>{html.escape(line['title'])} ({html.escape(line['sku'])})</td><td>{line['quantity']}</td>"
            f"<td>GBP {line['price']}</td></tr>" for line in draft["line_items"])
        paid = "<p><strong>Paid.</strong> Paying again changes nothing.</p>" if draft["order_id"] else ""
        body = (f"<h1>Invoice {html.escape(draft['name'])}</h1><p>Offline shop: no money moves.</p>"
                f"<table><tr><th>Item</th><th>Quantity</th><th>Price</th></tr>{rows}</table>"
                f"<p>Total GBP {draft['total_price']}</p>{paid}"
                f"<form method='post' action='{html.escape(path)}/pay'>"
                "<button type='submit'>Pay (offline shop)</button></form>")
        return html_response(200, f"Invoice {draft['name']}", body)

    def _pay_invoice(self, path: str) -> Response:
        draft = self._draft_at(path.removesuffix("/pay"))
        if draft is None:
            return html_response(404, "Invoice not found", "<h1>Invoice not found</h1>")
        order = self.pay(int(draft["id"]))
        if self.webhook_url and not self._deliver(order):
            return html_response(502, "Webhook not delivered",
                                 "<h1>Paid, but the paid-order webhook did not arrive</h1>"
                                 "<p>Is the gateway up? Press Pay again to re-send it.</p>"
                                 f"<form method='post' action='{html.escape(path)}'>"
                                 "<button type='submit'>Pay (offline shop)</button></form>")
        if self.return_url:
            return 303, {"Location": self.return_url, "Content-Type": "text/plain"}, b""
        return html_response(200, "Paid", f"<h1>Paid: order {html.escape(order['name'])}</h1>")

    def _deliver(self, order: dict[str, Any]) -> bool:
        """POST the `orders/paid` webhook; True when the gateway took it (2xx)."""
        assert self.webhook_url is not None
        raw = json.dumps(order).encode()
        headers = {"Content-Type": "application/json", "X-Shopify-Topic": "orders/paid",
                   "X-Shopify-Shop-Domain": self.base_url.split("://", 1)[-1],
                   "X-Shopify-Webhook-Id": str(uuid.uuid4()),
                   "X-Shopify-Hmac-Sha256": sign(raw, self.webhook_secret or "")}
        try:
            answer = httpx.post(self.webhook_url, content=raw, headers=headers, timeout=30.0, trust_env=False)
        except httpx.HTTPError as exc:
            log.warning("shop.webhook_unreachable", order_id=order["id"], error=type(exc).__name__)
            return False
        log.info("shop.webhook_sent", order_id=order["id"], http_status=answer.status_code)
        return answer.is_success

    # ------------------------------------------------------------------ the buyer

    def pay(self, draft_order_id: int, email: str = "buyer@example.com",
            customer_id: int = 7_700_001) -> dict[str, Any]:
        """Complete the draft order (paid) and return the paid order as its webhook carries it.
        Paying it again returns the same order (one draft order becomes one order)."""
        with self._lock:
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
            self._save()
            return dict(order)


def serve(shop: OfflineShop, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """An HTTP server for `shop` on host:port (not yet serving: call `serve_forever`)."""

    def dispatch(method: str, target: str, headers: dict[str, str], raw: bytes) -> Response:
        path = target.split("?", 1)[0]
        name = shop.route(method, path)
        if name is None:
            return json_response(404, {"errors": "Not Found"})
        parsed: Any = raw
        with contextlib.suppress(ValueError):
            parsed = json.loads(raw) if raw else None
        return shop.handle(name, path, headers, parsed)

    httpd = ThreadingHTTPServer((host, port), handler_for(dispatch))
    httpd.daemon_threads = True
    return httpd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m libs.offline_shop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state", type=Path, default=None, help="JSON file keeping the draft orders")
    args = parser.parse_args(argv)
    from libs.logging import configure_logging

    settings = Settings()
    configure_logging(settings, "shop")
    token = settings.shopify_admin_token.get_secret_value() if settings.shopify_admin_token else ""
    secret = settings.shopify_webhook_secret.get_secret_value() if settings.shopify_webhook_secret else ""
    if not token or not secret:
        raise SystemExit("the offline shop needs MMA_SHOPIFY_ADMIN_TOKEN and MMA_SHOPIFY_WEBHOOK_SECRET")
    base_url = f"http://127.0.0.1:{args.port}"
    shop = OfflineShop(token, settings.shopify_api_version, variants_of(settings), base_url=base_url,
                       webhook_url=f"http://127.0.0.1:{settings.gateway_port}/api/credits/shopify-order",
                       webhook_secret=secret, return_url=f"{settings.gateway_public_url}/checkout/return",
                       state_path=args.state)
    httpd = serve(shop, args.port)
    log.info("shop.started", url=base_url, pid=os.getpid())
    with contextlib.suppress(KeyboardInterrupt):
        httpd.serve_forever()
    httpd.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
