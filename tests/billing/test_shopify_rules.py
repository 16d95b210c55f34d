"""The webhook rules of billing.shopify, on raw bytes, without a bus."""

from __future__ import annotations

import base64
import hashlib
import hmac

import orjson
import pytest

from libs.errors import InvalidInputError, UnauthorizedError
from services.billing.shopify import credits_of, decode_body, parse_order, pass_id_of, verify_hmac

SECRET = "s3cret"


def sign(raw: bytes, secret: str = SECRET) -> str:
    return base64.b64encode(hmac.new(secret.encode(), raw, hashlib.sha256).digest()).decode()


def test_a_correct_signature_passes_and_any_other_is_invalid_hmac():
    """Only base64(HMAC-SHA256(secret, body)) of the exact bytes is accepted."""
    raw = b'{"id": 1}'
    verify_hmac(raw, sign(raw), SECRET)
    for header, secret in ((sign(raw + b" "), SECRET), (None, SECRET), ("", SECRET), (sign(raw), None),
                           (sign(raw, "other"), SECRET)):
        with pytest.raises(UnauthorizedError) as err:
            verify_hmac(raw, header, secret)
        assert err.value.instance_code == "INVALID_HMAC"


def test_pass_id_comes_from_the_note_attribute_then_customer_then_email():
    """MEGA.md order: mina_pass_id attribute, pass:shopify:<customer id>, pass:email:<lower email>."""
    base = {"customer": {"id": 42, "email": "A@B.com"}, "email": "Buyer@Example.COM"}
    with_attr = {**base, "note_attributes": [{"name": "other", "value": "x"},
                                             {"name": "mina_pass_id", "value": "pass:anon:abc"}]}
    assert pass_id_of(with_attr)[0] == "pass:anon:abc"
    assert pass_id_of(base) == ("pass:shopify:42", "42", "buyer@example.com")
    assert pass_id_of({"email": "Buyer@Example.COM"})[0] == "pass:email:buyer@example.com"
    assert pass_id_of({"customer": {"id": "anonymous"}})[0] is None


def test_credits_are_the_mapped_skus_times_quantity():
    """Unknown SKUs count nothing; a known SKU counts its credits once per unit."""
    order = {"line_items": [{"sku": "MINA-50", "quantity": 2}, {"sku": "TEE", "quantity": 3},
                            {"sku": "MINA-10", "quantity": 1}]}
    assert credits_of(order, {"MINA-50": 50, "MINA-10": 10}) == 110
    assert credits_of({"line_items": [{"sku": "TEE"}]}, {"MINA-50": 50}) == 0


def test_an_order_without_id_or_json_is_refused():
    """No order id is MISSING_ORDER_ID; a body that is not JSON or not base64 is refused too."""
    with pytest.raises(InvalidInputError) as err:
        parse_order(orjson.dumps({"line_items": []}), {})
    assert err.value.instance_code == "MISSING_ORDER_ID"
    with pytest.raises(InvalidInputError):
        parse_order(b"not json", {})
    with pytest.raises(InvalidInputError):
        decode_body("***")


def test_a_pack_sku_counts_its_credits_and_the_map_may_name_a_variant():
    """`MINA-<N>` sells N per unit (the 5000 pack from checkout included); the map wins and may key a variant id."""
    order = {"line_items": [{"sku": "MINA-5000", "quantity": 1, "variant_id": 44184397283411},
                            {"sku": "MINA-50", "quantity": 2}, {"sku": "MINA-50-GIFT", "quantity": 1},
                            {"sku": "", "variant_id": 123, "quantity": 3}]}
    assert credits_of(order, {}) == 5100
    assert credits_of(order, {"MINA-50": 60, "123": 10}) == 5000 + 120 + 30
