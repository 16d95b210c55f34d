"""The Shopify Admin REST API, as far as checkout needs it: create a draft order.

`POST https://<store>/admin/api/<version>/draft_orders.json` with `X-Shopify-Access-Token`
(UPSTREAM.md 2.1). A shop that is away for a moment (no answer in time, 429, 5xx) is a
ServiceUnavailableError, so the buyer hears 503 with Retry-After and may try again; a refusal
(401 bad token, 404 unknown version, 422 bad variant) is the shop's configuration, not the
buyer's, and answers CHECKOUT_FAILED with `SHOPIFY_<status>`. A draft order is not retried
here: a second one would be a second invoice, and the buyer's retry is the same decision.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
import structlog

from libs.errors import ConfigError, MmaError, ServiceUnavailableError
from libs.settings import Settings
from services.billing.adapters.protocols import DraftOrder, DraftOrderRequest
from services.billing.shopify import PASS_ID_ATTRIBUTE

if TYPE_CHECKING:  # imported with the client, on the first checkout: billing starts without httpx
    import httpx

log = structlog.get_logger("billing")

AWAY_STATUSES = (429, 500, 502, 503, 504)


def admin_base_url(domain: str) -> str:
    """`https://<domain>`; a value with a scheme (a local test shop) is used as it is."""
    domain = domain.strip().rstrip("/")
    return domain if "://" in domain else f"https://{domain}"


def draft_order_body(order: DraftOrderRequest) -> dict[str, Any]:
    """The draft order UPSTREAM.md 2.1 describes: one line, the pass id as a note attribute,
    the customer's default address, and the email only when a verified one is known."""
    draft: dict[str, Any] = {
        "line_items": [{"variant_id": order.variant_id, "quantity": order.quantity}],
        "note_attributes": [{"name": PASS_ID_ATTRIBUTE, "value": order.pass_id}],
        "use_customer_default_address": True,
    }
    if order.email:
        draft["email"] = order.email
    return {"draft_order": draft}


def _retry_after(response: httpx.Response) -> int | None:
    raw = response.headers.get("retry-after", "")
    try:
        return max(1, round(float(raw)))
    except ValueError:
        return None


class ShopifyAdmin:
    """An httpx client bound to one shop, its token and its API version (DraftOrders).

    The client is made on the first checkout, not at start: importing httpx and loading the CA
    bundle into its TLS context cost more than the rest of billing's setup."""

    def __init__(self, domain: str, token: str, api_version: str, timeout_s: float) -> None:
        self._url = f"{admin_base_url(domain)}/admin/api/{api_version}/draft_orders.json"
        self._token = token
        self._timeout_s = timeout_s
        self._http: httpx.AsyncClient | None = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            self._http = httpx.AsyncClient(
                timeout=self._timeout_s, trust_env=False,
                headers={"X-Shopify-Access-Token": self._token, "Content-Type": "application/json",
                         "Accept": "application/json"})
        return self._http

    @classmethod
    def from_settings(cls, settings: Settings) -> ShopifyAdmin:
        """The configured shop; without one billing does not start (a product that sells credits has a
        shop: `make up` runs the offline one, tests give theirs)."""
        token = settings.shopify_admin_token.get_secret_value() if settings.shopify_admin_token else ""
        domain = settings.shopify_store_domain or ""
        missing = [name for name, value in (("MMA_SHOPIFY_STORE_DOMAIN", domain),
                                            ("MMA_SHOPIFY_ADMIN_TOKEN", token)) if not value]
        if missing:
            raise ConfigError(f"billing needs a shop to sell credits: set {' and '.join(missing)}"
                              " (make up runs the offline shop)", code="SHOP_NOT_CONFIGURED")
        return cls(domain, token, settings.shopify_api_version, settings.shopify_timeout_s)

    async def create_draft_order(self, order: DraftOrderRequest) -> DraftOrder:
        import httpx

        try:
            response = await self._client().post(self._url, content=orjson.dumps(draft_order_body(order)))
        except httpx.HTTPError as exc:
            log.warning("billing.shopify_unreachable", error=type(exc).__name__)
            raise ServiceUnavailableError("SHOPIFY_UNREACHABLE", code="SHOPIFY_UNAVAILABLE") from exc
        status = response.status_code
        if status in AWAY_STATUSES:
            log.warning("billing.shopify_away", http_status=status)
            raise ServiceUnavailableError(f"SHOPIFY_{status}", code="SHOPIFY_UNAVAILABLE",
                                          retry_after=_retry_after(response))
        if status >= 300:
            log.error("billing.shopify_refused", http_status=status, body=response.text[:500])
            raise MmaError(f"SHOPIFY_{status}", code="CHECKOUT_FAILED", shopify_status=status)
        return _draft_order_of(response)

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.aclose()


def _draft_order_of(response: httpx.Response) -> DraftOrder:
    try:
        data = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        data = None
    draft = data.get("draft_order") if isinstance(data, dict) else None
    draft = draft if isinstance(draft, dict) else {}
    invoice_url, draft_id = draft.get("invoice_url"), draft.get("id")
    if not isinstance(invoice_url, str) or not invoice_url.startswith(("https://", "http://")):
        log.error("billing.shopify_no_invoice_url", draft_order_id=draft_id)
        raise MmaError("Shopify created no invoice URL for the draft order.", code="NO_INVOICE_URL")
    if not isinstance(draft_id, int) or isinstance(draft_id, bool):
        raise MmaError("Shopify answered a draft order without an id.", code="NO_INVOICE_URL")
    return DraftOrder(id=draft_id, invoice_url=invoice_url)
