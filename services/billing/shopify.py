"""Reading a Shopify order webhook: HMAC check, order id, pass id, credits bought.

Pure functions of the raw bytes and settings, so the rules are testable without a bus.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from libs.errors import InvalidInputError, UnauthorizedError

PASS_ID_ATTRIBUTE = "mina_pass_id"
PACK_SKU = re.compile(r"MINA-([1-9][0-9]{0,5})")


@dataclass(frozen=True)
class ShopifyOrderData:
    order_id: str
    pass_id: str | None
    credits: int
    shopify_customer_id: str | None
    email: str | None


def decode_body(raw_body_b64: str) -> bytes:
    try:
        return base64.b64decode(raw_body_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError("The webhook body could not be read.", code="INVALID_BODY") from exc


def verify_hmac(raw: bytes, header: str | None, secret: str | None) -> None:
    """Constant-time check of `X-Shopify-Hmac-Sha256`; no configured secret refuses everything."""
    if not secret or not header:
        raise UnauthorizedError("Invalid webhook signature.", code="INVALID_HMAC")
    expected = base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest())
    if not hmac.compare_digest(expected, header.strip().encode()):
        raise UnauthorizedError("Invalid webhook signature.", code="INVALID_HMAC")


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def pass_id_of(order: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    """(pass id, Shopify customer id, email) as MEGA.md derives them: attribute, customer, email."""
    raw_customer = order.get("customer")
    customer: Mapping[str, Any] = raw_customer if isinstance(raw_customer, dict) else {}
    shopify_id = _text(customer.get("id"))
    if shopify_id == "anonymous":
        shopify_id = None
    email = _text(order.get("email")) or _text(order.get("contact_email")) or _text(customer.get("email"))
    email = email.lower() if email else None
    for attr in order.get("note_attributes") or []:
        if isinstance(attr, dict) and attr.get("name") == PASS_ID_ATTRIBUTE and _text(attr.get("value")):
            return _text(attr.get("value")), shopify_id, email
    if shopify_id:
        return f"pass:shopify:{shopify_id}", shopify_id, email
    if email:
        return f"pass:email:{email}", shopify_id, email
    return None, shopify_id, email


def credits_per_unit(line: Mapping[str, Any], product_map: Mapping[str, int]) -> int | None:
    """The line's credits per unit: its SKU in the map, else its variant id in the map, else a
    `MINA-<N>` SKU (N credits, UPSTREAM.md 2.1: MINA-50, the 5000 pack's MINA-5000); None for a
    line that sells no credits."""
    sku = str(line.get("sku") or "").strip()
    for key in (sku, str(line.get("variant_id") or "").strip()):
        if key and key in product_map:
            return product_map[key]
    pack = PACK_SKU.fullmatch(sku)
    return int(pack.group(1)) if pack else None


def credits_of(order: Mapping[str, Any], product_map: Mapping[str, int]) -> int:
    """Σ credits per unit × quantity over the order's lines; lines that sell no credits count nothing."""
    total = 0
    for line in order.get("line_items") or []:
        if not isinstance(line, dict):
            continue
        per_unit = credits_per_unit(line, product_map)
        if per_unit is None:
            continue
        try:
            quantity = int(line.get("quantity") or 1)
        except (TypeError, ValueError):
            quantity = 1
        total += per_unit * max(quantity, 0)
    return total


def parse_order(raw: bytes, product_map: Mapping[str, int]) -> ShopifyOrderData:
    try:
        order = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidInputError("The webhook body is not JSON.", code="INVALID_JSON") from exc
    if not isinstance(order, dict):
        raise InvalidInputError("The webhook body is not a JSON object.", code="INVALID_JSON")
    order_id = _text(order.get("id"))
    if order_id is None:
        raise InvalidInputError("The order has no id.", code="MISSING_ORDER_ID")
    pass_id, shopify_id, email = pass_id_of(order)
    return ShopifyOrderData(order_id=order_id, pass_id=pass_id, credits=credits_of(order, product_map),
                            shopify_customer_id=shopify_id, email=email)
