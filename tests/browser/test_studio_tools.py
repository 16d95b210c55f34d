"""The studio's fingertips tools and its buy button, in headless Chromium on the real stack.

Expand, Draw and Erase act on the selected still: a mask is drawn as a lasso on the canvas over
it, sent as a PNG data URL at the image's natural size, and the edit (the offline editor) comes
back as a new still at the front of the strip. Buying opens the draft order's invoice from a
local shop speaking the Shopify Admin API; paying it and the paid-order webhook credit the buyer.
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from PIL import Image, ImageDraw, ImageStat
from playwright.async_api import expect

from tests.conftest import ADMIN_TOKEN, Services
from tests.gateway.support import shopify_sign
from tests.wire import ShopifyAdminServer

SLOW = 90_000  # ms: a generation on the offline provider, on a 2-core machine under load
SHOP_TOKEN = "shpat_studio_browser_1"
WEBHOOK_SECRET = "test-shopify-secret-71aa"  # the settings fixture's


def product_file(path: Path) -> Path:
    """A red bottle on white: the offline still shows it, so edits have something to act on."""
    image = Image.new("RGB", (300, 400), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.rectangle([90, 140, 210, 360], fill=(200, 30, 40))
    draw.rectangle([130, 60, 170, 145], fill=(200, 30, 40))
    image.save(path, format="PNG")
    return path


def from_data_url(url: str) -> Image.Image:
    header, _, data = url.partition(",")
    assert header == "data:image/png;base64", header
    return Image.open(io.BytesIO(base64.b64decode(data)))


async def open_studio(page: Any, gateway_url: str, query: str = "") -> str:
    await page.goto(f"{gateway_url}/studio{query}")
    await expect(page.locator("body[data-ready=true]")).to_have_count(1, timeout=30_000)
    pass_id: str = await page.get_by_test_id("pass-id").input_value()
    assert pass_id.startswith("pass:anon:")
    return pass_id


async def create_still(page: Any, tmp_path: Path) -> str:
    """Upload a product, create a still, wait until it is shown; its URL."""
    await page.locator("#product-file").set_input_files(str(product_file(tmp_path / "bottle.png")))
    await expect(page.locator("#product-thumbs img")).to_be_visible(timeout=20_000)
    await page.get_by_test_id("brief").fill("The bottle on a stone plinth")
    await page.get_by_test_id("create").click()
    await expect(page.get_by_test_id("status")).to_have_text("done", timeout=SLOW)
    await expect(page.locator("#stills img")).to_have_count(1, timeout=SLOW)
    still = page.get_by_test_id("still")
    await page.wait_for_function("() => { const i = document.getElementById('still'); "
                                 "return i.complete && i.naturalWidth > 0; }", timeout=SLOW)
    url: str = await still.get_attribute("src")
    return url


async def natural_size(page: Any) -> tuple[int, int]:
    width, height = await page.get_by_test_id("still").evaluate("i => [i.naturalWidth, i.naturalHeight]")
    return int(width), int(height)


async def lasso(page: Any, left: float, top: float, right: float, bottom: float) -> None:
    """Draw a closed lasso (an octagon) over the canvas, in fractions of its size."""
    canvas = page.get_by_test_id("mask-canvas")
    await canvas.scroll_into_view_if_needed()
    box = await canvas.bounding_box()
    assert box and box["width"] > 50
    cx, cy = (left + right) / 2, (top + bottom) / 2
    rx, ry = (right - left) / 2, (bottom - top) / 2
    ring = [(cx - rx, cy), (cx - rx * 0.7, cy - ry), (cx + rx * 0.7, cy - ry), (cx + rx, cy), (cx + rx, cy + ry * 0.7),
            (cx + rx * 0.7, cy + ry), (cx - rx * 0.7, cy + ry), (cx - rx, cy + ry * 0.7)]
    points = [(box["x"] + x * box["width"], box["y"] + y * box["height"]) for x, y in ring]
    await page.mouse.move(*points[0])
    await page.mouse.down()
    for point in [*points[1:], points[0]]:
        await page.mouse.move(*point, steps=4)
    await page.mouse.up()


async def fetch_image(url: str) -> Image.Image:
    async with httpx.AsyncClient(timeout=20.0) as http:
        answer = await http.get(url)
    assert answer.status_code == 200
    return Image.open(io.BytesIO(answer.content)).convert("RGB")


def region_mean(image: Image.Image, box: tuple[float, float, float, float]) -> list[float]:
    w, h = image.size
    return list(ImageStat.Stat(image.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w),
                                           int(box[3] * h)))).mean)


async def test_expand_draw_and_erase_on_a_still(gateway_url: str, page: Any, tmp_path: Path, shots: Path) -> None:
    """Erase then Draw with lassos (masks at the image's natural size, white = the selection), then Expand
    to the other orientation: each result is a new still at the front of the strip."""
    pass_id = await open_studio(page, gateway_url)
    still_url = await create_still(page, tmp_path)
    sent: list[str] = []
    page.on("request", lambda r: sent.append(r.url) if "/fingertips/generate" in r.url else None)

    # Erase: nothing drawn yet, nothing sent
    await page.get_by_test_id("tool-erase").click()
    await expect(page.get_by_test_id("mask-hint")).to_have_text("Draw around the area to erase")
    await expect(page.get_by_test_id("mask-canvas")).to_be_visible()
    await page.get_by_test_id("mask-apply").click()
    await expect(page.get_by_test_id("tool-status")).to_have_text("Draw a selection on the area first")
    assert sent == []

    natural = await natural_size(page)
    await lasso(page, 0.3, 0.3, 0.7, 0.7)
    await page.screenshot(path=str(shots / "studio-5-erase-mask.png"), full_page=True)
    async with page.expect_response("**/fingertips/generate", timeout=SLOW) as answer:
        await page.get_by_test_id("mask-apply").click()
    response = await answer.value
    body = response.request.post_data_json
    assert set(body) == {"modelKey", "inputs", "passId"} and body["passId"] == pass_id
    assert body["modelKey"] == "eraser" and set(body["inputs"]) == {"image", "mask_image"}
    assert body["inputs"]["image"] == still_url
    mask = from_data_url(body["inputs"]["mask_image"]).convert("L")
    assert mask.size == natural
    assert set(mask.getextrema()) <= {0, 255} and mask.getpixel((natural[0] // 2, natural[1] // 2)) == 255
    assert mask.getpixel((5, 5)) == 0 and mask.getpixel((natural[0] - 5, natural[1] - 5)) == 0
    white = mask.histogram()[255] / (natural[0] * natural[1])
    assert 0.08 < white < 0.2  # about the lasso's octagon (0.4 x 0.4 of the image, corners cut)
    erased = await response.json()
    assert response.status == 200 and erased["status"] == "done", erased
    await expect(page.locator("#stills img")).to_have_count(2, timeout=SLOW)
    await expect(page.locator("#stills img").first).to_have_attribute("data-id", erased["generation_id"])
    await expect(page.get_by_test_id("still")).to_have_attribute("src", erased["output_url"])
    await expect(page.get_by_test_id("mask-canvas")).to_be_hidden()
    before, after = await fetch_image(still_url), await fetch_image(erased["output_url"])
    centre = (0.42, 0.42, 0.58, 0.58)
    assert max(abs(a - b) for a, b in zip(region_mean(before, centre), region_mean(after, centre), strict=True)) > 10
    corner = (0.0, 0.0, 0.15, 0.15)
    assert max(abs(a - b) for a, b in zip(region_mean(before, corner), region_mean(after, corner), strict=True)) < 4

    # Draw: a prompt and a lasso; the fill acts on the erased still, now the selected one
    await page.get_by_test_id("tool-draw").click()
    await expect(page.get_by_test_id("mask-hint")).to_have_text("Draw around the area to fill")
    await page.get_by_test_id("draw-prompt").fill("a small gold ring")
    await lasso(page, 0.55, 0.1, 0.9, 0.4)
    async with page.expect_response("**/fingertips/generate", timeout=SLOW) as answer:
        await page.get_by_test_id("mask-apply").click()
    response = await answer.value
    body = response.request.post_data_json
    assert body["modelKey"] == "flux_fill"
    assert body["inputs"]["image"] == erased["output_url"] and body["inputs"]["prompt"] == "a small gold ring"
    assert {k: body["inputs"][k] for k in ("mask_type", "sync", "preserve_alpha")} == {
        "mask_type": "manual", "sync": True, "preserve_alpha": True}
    fill_mask = from_data_url(body["inputs"]["mask"]).convert("L")
    assert fill_mask.size == natural and fill_mask.getpixel((int(natural[0] * 0.72), int(natural[1] * 0.25))) == 255
    assert fill_mask.getpixel((natural[0] // 4, natural[1] // 2)) == 0
    filled = await response.json()
    assert response.status == 200 and filled["status"] == "done", filled
    await expect(page.locator("#stills img")).to_have_count(3, timeout=SLOW)
    await expect(page.locator("#stills img").first).to_have_attribute("data-id", filled["generation_id"])

    # Expand: a square still asks for 4:3 (the frontend's rule) and comes back wider
    async with page.expect_response("**/fingertips/generate", timeout=SLOW) as answer:
        await page.get_by_test_id("tool-expand").click()
    response = await answer.value
    body = response.request.post_data_json
    assert body["modelKey"] == "expand" and body["inputs"] == {"image": filled["output_url"], "aspect_ratio": "4:3"}
    expanded = await response.json()
    assert response.status == 200 and expanded["status"] == "done", expanded
    await expect(page.locator("#stills img")).to_have_count(4, timeout=SLOW)
    await expect(page.get_by_test_id("still")).to_have_attribute("src", expanded["output_url"])
    await page.wait_for_function("() => document.getElementById('still').naturalWidth > 0", timeout=SLOW)
    width, height = await natural_size(page)
    assert abs(width / height - 4 / 3) < 0.02

    # the strip selects an older still again: the tools work on that one
    await page.locator("#stills img").last.click()
    await expect(page.get_by_test_id("still")).to_have_attribute("src", still_url)
    await expect(page.locator("#session-list tr")).to_have_count(4)
    await expect(page.get_by_test_id("error")).to_be_hidden()
    await page.screenshot(path=str(shots / "studio-6-fingertips.png"), full_page=True)
    assert page.js_errors == []


async def test_a_refused_edit_shows_why(gateway_url: str, page: Any, tmp_path: Path) -> None:
    """No credits left for the pool: Expand shows the 402's text, no still is added."""
    pass_id = await open_studio(page, gateway_url)
    await create_still(page, tmp_path)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20.0) as http:
        balance = (await http.get("/credits/balance", params={"passId": pass_id})).json()["balance"]
        r = await http.post("/admin/credits/adjust", json={"passId": pass_id, "delta": -balance, "reason": "test",
                                                           "idempotencyKey": f"tools-{pass_id}"},
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert r.status_code == 200, r.text
    async with page.expect_response("**/fingertips/generate", timeout=SLOW) as answer:
        await page.get_by_test_id("tool-expand").click()
    assert (await answer.value).status == 402
    error = page.get_by_test_id("error")
    await expect(error).to_contain_text("HTTP 402", timeout=20_000)
    await expect(page.get_by_test_id("tool-status")).not_to_have_text("")
    await expect(page.locator("#stills img")).to_have_count(1)
    await expect(page.get_by_test_id("tool-expand")).to_be_enabled()
    assert page.js_errors == []


@pytest.fixture
def shop() -> Iterator[ShopifyAdminServer]:
    with ShopifyAdminServer(token=SHOP_TOKEN) as server:
        assert isinstance(server, ShopifyAdminServer)
        yield server


@pytest.fixture
async def shop_gateway_url(services: Services, shop: ShopifyAdminServer) -> AsyncIterator[str]:
    """The stack with checkout on: billing holds the local shop's Admin API token."""
    await services.start_all(welcome_credits=20, shopify_store_domain=shop.domain, shopify_admin_token=SHOP_TOKEN)
    yield services.gateway_url


async def test_buy_opens_the_checkout_and_the_paid_order_credits_the_buyer(
        shop_gateway_url: str, page: Any, shop: ShopifyAdminServer, shots: Path) -> None:
    """Buy 100 matcha: POST {qty: 2}, the invoice opens in a new tab, the draft order carries this pass id;
    the paid order's webhook credits it, and the return page says the payment arrived."""
    gateway_url = shop_gateway_url
    pass_id = await open_studio(page, gateway_url)
    await expect(page.get_by_test_id("balance")).to_have_text("20", timeout=20_000)
    await page.get_by_test_id("buy-qty").select_option("2")
    async with page.context.expect_page(timeout=30_000) as opened, \
            page.expect_response("**/api/checkout/create", timeout=30_000) as answer:
        await page.get_by_test_id("buy").click()
    response = await answer.value
    assert response.request.post_data_json == {"qty": 2}
    assert response.request.headers.get("x-mina-pass-id") == pass_id
    created = await response.json()
    assert response.status == 200 and created["ok"] is True, created
    invoice = await opened.value
    await invoice.wait_for_load_state()
    assert invoice.url == created["checkoutUrl"]
    await invoice.close()
    await expect(page.get_by_test_id("buy-status")).to_contain_text("Complete your purchase")
    await expect(page.locator("[data-testid=buy-link]")).to_have_attribute("href", created["checkoutUrl"])
    draft = shop.draft_orders[int(created["draftOrderId"])]
    assert {"name": "mina_pass_id", "value": pass_id} in draft["note_attributes"]
    assert [(i["variant_id"], i["quantity"]) for i in shop.bodies("create_draft_order")[-1]["draft_order"][
        "line_items"]] == [(43328351928403, 2)]

    order = orjson.dumps(shop.pay(int(created["draftOrderId"])))
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20.0) as http:
        paid = await http.post("/api/credits/shopify-order", content=order, headers={
            "X-Shopify-Hmac-Sha256": shopify_sign(order, WEBHOOK_SECRET), "content-type": "application/json"})
    assert paid.status_code == 200 and paid.json()["credited"] == 100, paid.text

    await page.goto(f"{gateway_url}/studio?checkout=complete")
    await expect(page.get_by_test_id("buy-status")).to_have_text("Payment received — your matcha are on the way!")
    await expect(page.get_by_test_id("balance")).to_have_text("120", timeout=20_000)
    assert "checkout" not in page.url
    await page.screenshot(path=str(shots / "studio-7-bought.png"), full_page=True)
    assert page.js_errors == []


async def test_buy_with_the_shop_down_shows_the_error(gateway_url: str, page: Any) -> None:
    """The tests' default shop has nobody listening: the checkout's 503 is shown, nothing opens."""
    await open_studio(page, gateway_url)
    opened: list[Any] = []
    page.context.on("page", lambda tab: opened.append(tab))
    async with page.expect_response("**/api/checkout/create", timeout=30_000) as answer:
        await page.get_by_test_id("buy").click()
    assert (await answer.value).status == 503
    await expect(page.get_by_test_id("error")).to_be_visible(timeout=20_000)
    await expect(page.get_by_test_id("buy-status")).to_be_hidden()
    await expect(page.get_by_test_id("buy")).to_be_enabled()
    assert opened == [] and page.js_errors == []
