"""Fingertips over HTTP on the real stack: the frontend's requests and the original backend's answers."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
from PIL import Image, ImageDraw

from libs.settings import Settings
from tests.conftest import Services
from tests.gateway.support import ADMIN, data_url, new_user, read_sse, signed_in
from tests.helpers import wait_for

SIZE = (120, 90)


def scene_png() -> bytes:
    image = Image.new("RGB", SIZE, (228, 222, 210))
    ImageDraw.Draw(image).ellipse((40, 25, 80, 65), fill=(30, 80, 170))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def mask_png() -> bytes:
    """The frontend's mask: opaque black, opaque white where the customer drew."""
    image = Image.new("RGB", SIZE, (0, 0, 0))
    ImageDraw.Draw(image).ellipse((32, 17, 88, 73), fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def upload(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    r = await client.post("/api/upload", files={"file": ("s.png", scene_png(), "image/png")}, headers=headers)
    assert r.status_code == 200, r.text
    return str(r.json()["publicUrl"])


async def edit(client: httpx.AsyncClient, headers: dict[str, str], pass_id: str, model_key: str,
               **inputs: Any) -> httpx.Response:
    """Exactly what the frontend sends: {modelKey, inputs, passId}, Bearer + X-Mina-Pass-Id."""
    return await client.post("/fingertips/generate", json={"modelKey": model_key, "inputs": inputs,
                                                           "passId": pass_id}, headers=headers, timeout=120)


async def test_erase_expand_and_fill_as_the_studio_sends_them(stack: Services, client: httpx.AsyncClient,
                                                             settings: Settings, db: Any) -> None:
    """Erase (mask as a data URL), Draw (fill) and Expand answer done with our output URL and the pool's numbers."""
    pass_id = new_user()
    h = signed_in(settings, pass_id)
    image = await upload(client, h)

    r = await edit(client, h, pass_id, "eraser", image=image, mask_image=data_url(mask_png()))
    assert r.status_code == 200, r.text
    out = r.json()
    assert "ok" not in out and out["status"] == "done" and out["model_key"] == "eraser"
    # beside the generation's other outputs, under /mma/: the live frontend's viewer shows only such URLs
    # (StudioRight safeStillUrl: `/mma/` or `/generations/`), else it keeps the still the edit came from
    assert out["output_url"].startswith(f"{settings.assets_base_url}/mma/{out['generation_id']}/")
    assert out["output_url"].endswith("-eraser.png")
    assert (out["credits_cost"], out["matchas_deducted"], out["pool_remaining"]) == (0.5, 1, 0.5)
    assert out["prediction_id"] and isinstance(out["elapsed_ms"], int)
    erased = Image.open(io.BytesIO((await client.get(out["output_url"])).content))
    assert erased.size == SIZE

    async def projected() -> Any:
        return await db.fetchrow("select mg_mma_vars from mega_generations where mg_id = $1 and "
                                 "mg_mma_status = 'done'", f"generation:{out['generation_id']}")

    row = await wait_for(projected, 30, what="the edit's row")
    stored_mask = json.loads(row["mg_mma_vars"])["fingertips"]["inputs"]["mask_image"]
    assert stored_mask.startswith(settings.assets_base_url + "/fingertips/mask/")
    assert stored_mask.endswith("_mask_image.png")

    read = await client.get(f"/fingertips/generations/{out['generation_id']}", headers=h)
    assert read.status_code == 200, read.text
    got = read.json()
    assert (got["status"], got["mode"], got["model"], got["model_key"], got["output_url"], got["error"]) == (
        "done", "fingertips", "bria/eraser", "eraser", out["output_url"], None)
    assert isinstance(got["latency_ms"], int) and got["created_at"] and got["updated_at"]

    fill = await edit(client, h, pass_id, "flux_fill", image=out["output_url"], mask=data_url(mask_png()),
                      prompt="a red apple", mask_type="manual", sync=True, preserve_alpha=True)
    assert fill.status_code == 200, fill.text
    assert (fill.json()["matchas_deducted"], fill.json()["pool_remaining"]) == (0, 0.0)

    wide = await edit(client, h, pass_id, "expand", image=fill.json()["output_url"], aspect_ratio="16:9")
    assert wide.status_code == 200, wide.text
    expanded = Image.open(io.BytesIO((await client.get(wide.json()["output_url"])).content))
    assert abs(expanded.width / expanded.height - 16 / 9) < 0.02

    pool = (await client.get("/fingertips/pool", headers=h)).json()
    assert (pool["ok"], pool["pool"], pool["matchaBalance"]) == (True, 0.5, 18)
    models = (await client.get("/fingertips/models")).json()
    assert [m["key"] for m in models["models"]] == ["eraser", "flux_fill", "expand", "remove_bg", "upscale",
                                                      "vectorize"]
    prices = {m["key"]: (m["costPerGeneration"], m["generationsPerMatcha"]) for m in models["models"]}
    assert prices == {"eraser": (0.5, 2), "flux_fill": (0.5, 2), "expand": (0.5, 2), "remove_bg": (0.2, 5),
                      "upscale": (0.1, 10), "vectorize": (0.5, 2)}

    sse = await read_sse(client, f"/mma/stream/{out['generation_id']}", headers=h, timeout=30)
    assert sse.closed and sse.events[-1].event == "done"


async def test_the_error_table(stack: Services, client: httpx.AsyncClient, settings: Settings) -> None:
    """400 unknown tool / missing inputs, 500 bad data URL, 402 with no credit, 502 refunded: no `ok` key."""
    pass_id = new_user()
    h = signed_in(settings, pass_id)
    image = await upload(client, h)

    r = await edit(client, h, pass_id, "sharpen", image=image)
    assert r.status_code == 400
    assert r.json() == {"error": "UNKNOWN_FINGERTIPS_MODEL", "message": "UNKNOWN_FINGERTIPS_MODEL",
                        "modelKey": "sharpen", "availableModels": ["eraser", "flux_fill", "expand", "remove_bg",
                                                                   "upscale", "vectorize"]}
    r = await edit(client, h, pass_id, "eraser", image=image)
    assert r.status_code == 400
    assert r.json() == {"error": "MISSING_REQUIRED_INPUTS", "modelKey": "eraser", "missing": ["mask_image"],
                        "message": "Missing required inputs for Object Eraser: mask_image"}
    r = await edit(client, h, pass_id, "eraser", image=image, mask_image="data:image/png;base64,@@not-base64@@")
    assert (r.status_code, r.json()["error"], r.json()["message"]) == (500, "FINGERTIPS_FAILED", "INVALID_DATA_URL")
    r = await edit(client, h, pass_id, "remove_bg", image="http://169.254.169.254/latest/meta-data/")
    assert r.status_code == 400 and r.json()["error"] == "URL_NOT_ALLOWED" and "ok" not in r.json()

    gone = f"{settings.assets_base_url}/uploads/not-there.png"
    r = await edit(client, h, pass_id, "remove_bg", image=gone)
    assert r.status_code == 502, r.text
    assert r.json() == {"error": "FINGERTIPS_GENERATION_FAILED", "message": "Edit failed. Please try again.",
                        "refunded": True, "modelKey": "remove_bg"}
    pool = (await client.get("/fingertips/pool", headers=h)).json()
    assert (pool["pool"], pool["matchaBalance"]) == (1.0, 19)  # the refill stays, the 0.2 came back

    adjust = await client.post("/admin/credits/adjust", headers={**ADMIN, "Idempotency-Key": "ft-drain"},
                               json={"passId": pass_id, "delta": -19})
    assert adjust.status_code == 200, adjust.text
    for _ in range(2):  # the pool still pays for two erasers, then a third needs a credit there is not
        assert (await edit(client, h, pass_id, "eraser", image=image,
                           mask_image=data_url(mask_png()))).status_code == 200
    r = await edit(client, h, pass_id, "eraser", image=image, mask_image=data_url(mask_png()))
    assert r.status_code == 402
    assert r.json() == {"error": "INSUFFICIENT_CREDITS", "message": "INSUFFICIENT_CREDITS", "modelKey": "eraser"}


async def test_an_edit_that_outlives_the_wait_answers_processing_then_lands(
        services: Services, settings: Settings) -> None:
    """Past MMA_FINGERTIPS_WAIT_S the answer is `processing`; the edit finishes and reads back done."""
    await services.start_all(welcome_credits=20, fingertips_wait_s=1, offline_latency_ms=2500)
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=60.0) as client:
        pass_id = new_user()
        h = signed_in(settings, pass_id)
        image = await upload(client, h)
        r = await edit(client, h, pass_id, "upscale", image=image)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["status"] == "processing" and out["model_key"] == "upscale"
        assert out["model"].startswith("fermatresearch/magic-image-refiner:")
        assert (out["credits_cost"], out["matchas_deducted"], out["pool_remaining"]) == (0.1, 1, 0.9)
        assert "/fingertips/generations/" in out["message"]
        assert out["prediction_id"].startswith("offline-edit-")  # recorded before the tool's wait

        async def landed() -> dict[str, Any] | None:
            got = (await client.get(f"/fingertips/generations/{out['generation_id']}", headers=h)).json()
            return got if got["status"] == "done" else None

        got = await wait_for(landed, 60, what="the edit to land")
        assert got["output_url"].startswith(f"{settings.assets_base_url}/mma/{out['generation_id']}/")
        big = Image.open(io.BytesIO((await client.get(got["output_url"])).content))
        assert big.size == (SIZE[0] * 2, SIZE[1] * 2)


async def test_only_the_owner_reads_an_edit(stack: Services, client: httpx.AsyncClient,
                                            settings: Settings) -> None:
    """Another customer's edit is refused; an edit for someone else's pass id too; an unknown id is 404."""
    owner, other = new_user(), new_user()
    h_owner, h_other = signed_in(settings, owner), signed_in(settings, other)
    image = await upload(client, h_owner)
    r = await edit(client, h_owner, owner, "vectorize", image=image)
    assert r.status_code == 200, r.text
    assert r.json()["output_url"].endswith(".svg")
    gid = r.json()["generation_id"]
    assert (await client.get(f"/fingertips/generations/{gid}", headers=h_other)).status_code == 403
    assert (await edit(client, h_other, owner, "vectorize", image=image)).status_code == 403
    unknown = await client.get("/fingertips/generations/nope-nope", headers=h_owner)
    assert unknown.status_code == 404
