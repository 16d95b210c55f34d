"""The studio and the ops console in headless Chromium, on the real stack with the offline provider."""

from __future__ import annotations

import re
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from PIL import Image, ImageDraw
from playwright.async_api import expect

from libs.settings import Settings
from tests.conftest import ADMIN_TOKEN
from tests.gateway.support import signed_in, user_token
from tests.helpers import wait_for

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

SLOW = 90_000  # ms: a generation on the offline provider, on a 2-core machine under load

# Records, in order, what the studio showed: each scan line, each status and each new still.
RECORDER = """
document.addEventListener("DOMContentLoaded", () => {
  window.__shown = [];
  const lines = document.getElementById("scan-lines");
  const status = document.getElementById("status");
  const still = document.getElementById("still");
  if (!lines) return;
  new MutationObserver((muts) => {
    for (const m of muts) for (const n of m.addedNodes) window.__shown.push(["scan", n.textContent]);
  }).observe(lines, {childList: true});
  new MutationObserver(() => window.__shown.push(["status", status.textContent])).observe(
    status, {childList: true, characterData: true, subtree: true});
  new MutationObserver(() => window.__shown.push(["still", still.getAttribute("src")])).observe(
    still, {attributes: true, attributeFilter: ["src"]});
});
"""


def image_file(path: Path, color: tuple[int, int, int], label: str) -> Path:
    image = Image.new("RGB", (256, 256), (245, 240, 232))
    draw = ImageDraw.Draw(image)
    draw.ellipse([48, 48, 208, 208], fill=color)
    draw.text((20, 220), label, fill=(20, 20, 20))
    image.save(path, format="PNG")
    return path


async def generation_ids(page: Any) -> list[str]:
    """The studio's session table, newest first."""
    cells = page.locator("#session-list tr td:first-child")
    return [t.strip() for t in await cells.all_inner_texts()]


async def wait_done(page: Any, count: int) -> None:
    """The `count`-th generation of the session reached `done`."""
    await expect(page.locator("#session-list tr")).to_have_count(count, timeout=SLOW)
    await expect(page.locator("#session-list tr").first.locator(".pill")).to_have_text("done", timeout=SLOW)
    await expect(page.get_by_test_id("status")).to_have_text("done", timeout=SLOW)


async def test_studio_happy_path_then_ops_console(gateway_url: str, page: Any, tmp_path: Path, shots: Path,
                                                  database_url: str, settings: Settings) -> None:
    """A new user signs in, uploads, creates, watches it live, tweaks, animates, plays, likes and downloads;
    ops sees it all."""
    await page.add_init_script(RECORDER)
    await page.goto(f"{gateway_url}/studio")
    await expect(page.locator("body[data-ready=true]")).to_have_count(1)

    # signed in as the frontend is: the Supabase access token goes to /auth/shopify-sync, the studio
    # adopts `pass:user:<uid>` and sends the token beside the pass id on every call from then on
    user_id = str(uuid.uuid4())
    pass_id = f"pass:user:{user_id}"
    await page.get_by_test_id("access-token").fill(user_token(settings, user_id, "Browser@Example.com"))
    await page.get_by_test_id("sign-in").click()
    await expect(page.get_by_test_id("signed-in")).to_have_text("Signed in as browser@example.com", timeout=20_000)
    await expect(page.get_by_test_id("pass-id")).to_have_value(pass_id)
    await expect(page.get_by_test_id("balance")).to_have_text("20", timeout=20_000)
    assert await page.evaluate("localStorage.getItem('mina.passId')") == pass_id

    await page.locator("#product-file").set_input_files(str(image_file(tmp_path / "product.png", (180, 60, 60), "P")))
    await expect(page.locator("#product-thumbs img")).to_be_visible(timeout=20_000)
    await page.locator("#logo-file").set_input_files(str(image_file(tmp_path / "logo.png", (30, 30, 30), "L")))
    await expect(page.locator("#logo-thumbs img")).to_be_visible(timeout=20_000)
    await page.locator("#inspiration-file").set_input_files([
        str(image_file(tmp_path / "insp1.png", (60, 120, 180), "I1")),
        str(image_file(tmp_path / "insp2.png", (200, 170, 60), "I2")),
    ])
    await expect(page.locator("#inspiration-thumbs img")).to_have_count(2, timeout=20_000)
    product_url = await page.locator("#product-thumbs img").get_attribute("src")
    assert product_url and "/assets/" in product_url

    await page.get_by_test_id("brief").fill("A perfume bottle on a travertine plinth, soft morning light")
    await page.get_by_test_id("style").fill("minimal")
    await page.screenshot(path=str(shots / "studio-1-ready.png"), full_page=True)
    await page.get_by_test_id("create").click()

    await expect(page.locator("#scan-lines li").first).to_be_visible(timeout=SLOW)
    await expect(page.get_by_test_id("still")).to_be_visible(timeout=SLOW)
    await wait_done(page, 1)
    await page.screenshot(path=str(shots / "studio-2-still.png"), full_page=True)
    shown = await page.evaluate("window.__shown")
    kinds = [k for k, _ in shown]
    assert "scan" in kinds and "still" in kinds, shown
    assert kinds.index("scan") < kinds.index("still"), f"scan lines must arrive before the result: {shown}"
    statuses = [v for k, v in shown if k == "status"]
    assert statuses[-1] == "done" and any(s not in ("queued", "done") for s in statuses), statuses
    scan_count = await page.locator("#scan-lines li").count()
    assert scan_count >= 3  # product, logo and inspirations each said something
    assert await page.get_by_test_id("still").evaluate("img => img.complete && img.naturalWidth > 0")
    first_still = await page.get_by_test_id("still").get_attribute("src")
    [still_id] = await generation_ids(page)

    await page.get_by_test_id("still-like").click()
    await expect(page.get_by_test_id("still-like")).to_have_text("♥ Liked")
    async with page.expect_download() as download_info:
        await page.get_by_test_id("still-download").click()
    download = await download_info.value
    assert download.suggested_filename.endswith(".png")
    assert Image.open(await download.path()).size[0] > 0

    await page.get_by_test_id("still-feedback").fill("Warmer light and a darker background")
    await page.get_by_test_id("still-tweak").click()
    await wait_done(page, 2)
    await expect(page.get_by_test_id("still")).not_to_have_attribute("src", first_still or "", timeout=SLOW)
    tweak_id = (await generation_ids(page))[0]
    assert tweak_id != still_id

    await page.get_by_test_id("motion-brief").fill("Slow push-in, the light drifts across the bottle")
    await page.get_by_test_id("animate").click()
    await wait_done(page, 3)
    video = page.get_by_test_id("video")
    await expect(video).to_be_visible(timeout=SLOW)
    await page.wait_for_function(
        "() => { const v = document.getElementById('video'); return v.readyState >= 2 && v.currentTime > 0; }",
        timeout=SLOW)
    assert await video.evaluate("v => v.autoplay && v.muted && v.loop && v.controls && !v.error")
    await page.screenshot(path=str(shots / "studio-3-video.png"), full_page=True)
    video_id = (await generation_ids(page))[0]

    await page.get_by_test_id("video-like").click()
    await expect(page.get_by_test_id("video-like")).to_have_text("♥ Liked")
    await page.get_by_test_id("motion-feedback").fill("Slower, and no camera shake")
    await page.get_by_test_id("video-tweak").click()
    await wait_done(page, 4)
    video_tweak_id = (await generation_ids(page))[0]
    await page.wait_for_function(
        f"() => {{ const v = document.getElementById('video'); return v.src.length > 0 && v.readyState >= 2 "
        f"&& v.currentTime > 0 && !v.src.includes('{video_id}'); }}", timeout=SLOW)
    await expect(page.get_by_test_id("balance")).to_have_text("8", timeout=20_000)  # 20 - 1 - 1 - 5 - 5
    await expect(page.get_by_test_id("error")).to_be_hidden()
    await page.screenshot(path=str(shots / "studio-4-done.png"), full_page=True)
    assert page.js_errors == []

    async with httpx.AsyncClient(base_url=gateway_url, timeout=20.0) as http:
        assert (await http.get(f"/history/pass/{pass_id}")).status_code == 401  # not without the customer's token
        events = (await http.get(f"/history/pass/{pass_id}", headers=signed_in(settings, pass_id))).json()
        assert {g["generationId"] for g in events["generations"]} >= {still_id, tweak_id, video_id, video_tweak_id}

    # ---- the ops console
    ops = page
    await ops.goto(f"{gateway_url}/ops")
    await expect(ops.get_by_test_id("gate")).to_be_visible()
    await ops.get_by_test_id("token").fill(ADMIN_TOKEN)
    await ops.get_by_test_id("token-submit").click()
    rows = ops.locator("#gen-list tr")
    await expect(rows.first).to_be_visible(timeout=20_000)
    ids = [t.strip() for t in await ops.locator("#gen-list tr td:nth-child(2)").all_inner_texts()]
    assert ids[:4] == [video_tweak_id, video_id, tweak_id, still_id]  # newest first
    await expect(ops.locator(f'#gen-list tr[data-generation-id="{still_id}"] td:nth-child(3)')).to_have_text("still")

    await ops.locator(f'#gen-list tr[data-generation-id="{still_id}"]').click()
    await expect(ops.locator("#detail-id")).to_have_text(still_id, timeout=20_000)
    steps = ops.locator("#steps tr")
    step_types = [t.strip() for t in await ops.locator("#steps tr td:nth-child(2)").all_inner_texts()]
    assert step_types[0] == "scan_product" and "seedream_generate" in step_types, step_types
    assert "postscan_output_still" in step_types
    assert [t.strip() for t in await ops.locator("#steps tr td:first-child").all_inner_texts()] == [
        str(n) for n in range(1, len(step_types) + 1)]
    await expect(ops.locator("#credits tr")).to_have_count(1)
    await expect(ops.locator("#credits tr td:nth-child(2)")).to_have_text("-1")
    await expect(ops.locator("#chain tr td.empty")).to_be_visible()
    seedream = steps.filter(has_text="seedream_generate").first
    await seedream.locator("summary").click()
    await expect(seedream.locator("pre")).to_contain_text("settings_resolved")
    await ops.screenshot(path=str(shots / "ops-1-generation.png"), full_page=True)

    await ops.locator(f'#gen-list tr[data-generation-id="{video_tweak_id}"]').click()
    await expect(ops.locator("#detail-id")).to_have_text(video_tweak_id, timeout=20_000)
    chain = [t.strip() for t in await ops.locator("#chain tr td:first-child").all_inner_texts()]
    assert chain == [video_id, tweak_id, still_id]
    await expect(ops.locator("#credits tr td:nth-child(2)")).to_have_text("-5")

    await ops.locator("#tabs button[data-tab=reconcile]").click()
    await expect(ops.get_by_test_id("rec-ok")).to_have_text("balanced", timeout=30_000)
    customer = ops.locator("#rec-customers tr", has_text=pass_id)
    await expect(customer.locator("td:nth-child(2)")).to_have_text("8")
    await expect(customer.locator("td:nth-child(3)")).to_have_text("8")
    await ops.screenshot(path=str(shots / "ops-2-credits.png"), full_page=True)

    await ops.locator("#tabs button[data-tab=counts]").click()
    await expect(ops.locator("#counts thead")).to_contain_text("generation", timeout=20_000)
    await expect(ops.locator("#counts thead")).to_contain_text("mma_step")

    await ops.locator("#tabs button[data-tab=errors]").click()
    await expect(ops.locator("#error-filters button")).to_have_count(13)
    await ops.locator("#error-filters button", has_text="PROVIDER_ERROR").click()
    await expect(ops.locator("#error-list td.empty")).to_have_text("No PROVIDER_ERROR errors.", timeout=20_000)

    await ops.locator("#tabs button[data-tab=config]").click()
    reader = ops.locator("#config-list tr", has_text="mma.ctx.gpt_reader")
    await expect(reader.first).to_be_visible(timeout=20_000)
    before = await reader.first.locator("td:nth-child(2)").inner_text()
    await ops.get_by_test_id("config-key").fill("mma.ctx.gpt_reader")
    await ops.get_by_test_id("config-key").dispatch_event("change")
    await expect(ops.get_by_test_id("config-value")).not_to_have_value("")
    await ops.get_by_test_id("config-submit").click()
    version = int(before.removeprefix("v")) + 1
    await expect(ops.get_by_test_id("config-result")).to_have_text(
        f"Added app_config:mma.ctx.gpt_reader.v{version}", timeout=20_000)
    await expect(ops.locator("#config-list tr", has_text="mma.ctx.gpt_reader").first.locator("td:nth-child(2)")
                 ).to_have_text(f"v{version}")
    await ops.screenshot(path=str(shots / "ops-3-config.png"), full_page=True)
    assert ops.js_errors == []

    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("select mg_record_type, mg_key from mega_admin where mg_id = $1",
                                  f"app_config:mma.ctx.gpt_reader.v{version}")
        audits = await conn.fetchval("select count(*) from mega_admin where mg_record_type = 'admin_audit' "
                                     "and mg_detail->>'id' = $1", f"app_config:mma.ctx.gpt_reader.v{version}")
    finally:
        await conn.close()
    assert row is not None and row["mg_record_type"] == "app_config" and row["mg_key"] == "mma.ctx.gpt_reader"
    assert audits == 1


async def test_ops_console_refuses_a_wrong_token_and_filters_errors(gateway_url: str, page: Any,
                                                                   shots: Path) -> None:
    """A wrong token keeps the console locked (API 401); the right one shows the error feed by category."""
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20.0) as http:
        for headers in ({}, {"Authorization": "Bearer nope"}):
            r = await http.get("/ops/api/generations", headers=headers)
            assert r.status_code == 401 and r.json()["error"] == "Unauthorized"
        assert (await http.get("/ops")).status_code == 200  # the page itself asks for the token
        crash = await http.post("/api/log-error", json={"code": "STUDIO_BOOM", "message": "the studio fell over",
                                                        "url": "/studio"})
        assert crash.json()["ok"] is True

        async def projected() -> bool:
            r = await http.get("/ops/api/errors", params={"category": "FRONTEND_CRASH"}, headers=ADMIN)
            return any(e["detail"].get("error_code") == "STUDIO_BOOM" for e in r.json()["errors"])

        await wait_for(projected, 20, what="the crash report in the error feed")
    await page.goto(f"{gateway_url}/ops")
    await page.get_by_test_id("token").fill("not-the-token")
    await page.get_by_test_id("token-submit").click()
    await expect(page.get_by_test_id("error")).to_contain_text("refused", timeout=20_000)
    await expect(page.get_by_test_id("gate")).to_be_visible()
    await expect(page.locator("#panels")).to_be_hidden()
    assert await page.evaluate("sessionStorage.getItem('mina.adminToken')") is None
    await page.screenshot(path=str(shots / "ops-0-refused.png"), full_page=True)

    await page.get_by_test_id("token").fill(ADMIN_TOKEN)
    await page.get_by_test_id("token-submit").click()
    await page.locator("#tabs button[data-tab=errors]").click()
    await page.locator("#error-filters button", has_text="FRONTEND_CRASH").click()
    crash_row = page.locator("#error-list tr", has_text="STUDIO_BOOM")
    await expect(crash_row).to_contain_text("the studio fell over", timeout=20_000)
    await expect(crash_row.locator("td").first).to_have_text("🖥️")
    await page.screenshot(path=str(shots / "ops-4-errors.png"), full_page=True)
    await page.locator("#error-filters button", has_text="TIMEOUT").click()
    await expect(page.locator("#error-list td.empty")).to_have_text("No TIMEOUT errors.", timeout=20_000)
    await expect(page.locator("#error-list tr", has_text="STUDIO_BOOM")).to_have_count(0)
    assert page.js_errors == []


async def test_studio_shows_the_out_of_credits_message(gateway_url: str, page: Any, shots: Path) -> None:
    """A first visit gets a minted pass id; with no credits left, Create shows the 402's message."""
    pass_id = f"pass:anon:broke-{uuid.uuid4().hex[:12]}"
    await page.goto(f"{gateway_url}/studio")
    minted = page.get_by_test_id("pass-id")
    await expect(minted).to_have_value(re.compile(r"^pass:anon:[0-9a-f-]{36}$"), timeout=20_000)
    first_minted = await minted.input_value()
    assert await page.evaluate("localStorage.getItem('mina.passId')") == first_minted
    await page.get_by_role("button", name="New pass id").click()
    await expect(minted).not_to_have_value(first_minted, timeout=20_000)
    await expect(minted).to_have_value(re.compile(r"^pass:anon:"))
    await page.get_by_test_id("pass-id").fill(pass_id)
    await page.get_by_role("button", name="Use").click()
    await expect(page.get_by_test_id("balance")).to_have_text("20", timeout=20_000)
    async with httpx.AsyncClient(base_url=gateway_url, timeout=20.0) as http:
        r = await http.post("/admin/credits/adjust", json={"passId": pass_id, "delta": -20, "reason": "test",
                                                           "idempotencyKey": f"browser-{pass_id}"},
                            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert r.status_code == 200, r.text
    await page.get_by_test_id("brief").fill("Anything")
    await page.get_by_test_id("create").click()
    error = page.get_by_test_id("error")
    await expect(error).to_contain_text("Not enough Mina credits", timeout=20_000)
    await expect(error).to_contain_text("HTTP 402")
    await expect(page.get_by_test_id("balance")).to_have_text("0")
    await expect(page.get_by_test_id("create")).to_be_enabled()
    await page.screenshot(path=str(shots / "studio-0-no-credits.png"), full_page=True)
    assert page.js_errors == []


async def test_studio_refuses_a_customer_pass_id_without_its_token(gateway_url: str, page: Any,
                                                                  settings: Settings) -> None:
    """Typing someone's `pass:user:` id shows the 401 and no balance; signing out drops the customer's id."""
    victim = f"pass:user:{uuid.uuid4()}"
    await page.goto(f"{gateway_url}/studio")
    await expect(page.locator("body[data-ready=true]")).to_have_count(1)
    await page.get_by_test_id("pass-id").fill(victim)
    await page.get_by_role("button", name="Use").click()
    await expect(page.get_by_test_id("error")).to_contain_text("HTTP 401", timeout=20_000)
    await page.get_by_test_id("access-token").fill("not.a.token")
    await page.get_by_test_id("sign-in").click()
    await expect(page.get_by_test_id("error")).to_contain_text("not accepted", timeout=20_000)
    user_id = str(uuid.uuid4())
    await page.get_by_test_id("access-token").fill(user_token(settings, user_id))
    await page.get_by_test_id("sign-in").click()
    await expect(page.get_by_test_id("pass-id")).to_have_value(f"pass:user:{user_id}", timeout=20_000)
    await expect(page.get_by_test_id("balance")).to_have_text("20", timeout=20_000)
    await page.get_by_test_id("sign-out").click()
    await expect(page.get_by_test_id("pass-id")).to_have_value(re.compile(r"^pass:anon:"), timeout=20_000)
    assert await page.evaluate("localStorage.getItem('mina.accessToken')") is None
    assert page.js_errors == []
