"""The six fingertips tools end to end on the bus: offline they really edit pixels, and through the
Replicate and OpenAI SDKs they send what the original backend sent (local wire servers)."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from libs.assets import build_asset_store
from libs.schemas import FingertipsRequest, Flow, GenerationRequest
from libs.settings import Settings
from tests.pipeline.conftest import Events, collect, make_job, publish_made_job
from tests.pipeline.test_flows import read_generation
from tests.wire import OpenAIServer, ReplicateServer
from tests.wire.replicate_server import BIREFNET_VERSION

SIZE = (160, 120)
OBJECT_BOX = (55, 30, 105, 90)  # the blue object the masks circle
MASK_BOX = (45, 20, 115, 100)


def scene() -> Image.Image:
    """A beige striped wall with a blue object in the middle."""
    image = Image.new("RGB", SIZE, (228, 222, 210))
    draw = ImageDraw.Draw(image)
    for x in range(0, SIZE[0], 12):
        draw.line([(x, 0), (x, SIZE[1])], fill=(205, 196, 182), width=2)
    draw.ellipse(OBJECT_BOX, fill=(30, 80, 170))
    return image


def mask() -> Image.Image:
    """What the frontend sends: opaque black, opaque white where the customer drew."""
    image = Image.new("RGB", SIZE, (0, 0, 0))
    ImageDraw.Draw(image).ellipse(MASK_BOX, fill=(255, 255, 255))
    return image


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def put(settings: Settings, image: Image.Image) -> str:
    stored = await build_asset_store(settings).put_bytes(png(image), folder="uploads", content_type="image/png")
    return stored.url


async def edit(bus: Any, model_key: str, **inputs: Any) -> str:
    request = GenerationRequest(fingertips=FingertipsRequest(model_key=model_key, inputs=inputs))
    return await publish_made_job(bus, make_job(Flow.FINGERTIPS, request, price=0))


async def output_of(settings: Settings, events: Events) -> bytes:
    url = events.done.output_url
    assert url and url.startswith(settings.assets_base_url + "/mma/"), url  # a path the frontend's viewer shows
    return await build_asset_store(settings).get_bytes(url)


def pixels(data: bytes, mode: str = "RGB") -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert(mode), dtype=np.int32)


def blue_share(region: np.ndarray) -> float:
    """How much of a region is the object's blue."""
    r, g, b = region[..., 0], region[..., 1], region[..., 2]
    return float(((b > r + 60) & (b > g + 30)).mean())


def far_from_mask() -> np.ndarray:
    """Pixels at least 12 px away from the drawn mask: an edit must leave them as they were."""
    yy, xx = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    left, top, right, bottom = MASK_BOX
    return (xx < left - 12) | (xx > right + 12) | (yy < top - 12) | (yy > bottom + 12)


def inside_object() -> tuple[slice, slice]:
    left, top, right, bottom = OBJECT_BOX
    return slice(top + 10, bottom - 10), slice(left + 10, right - 10)


async def test_mask_tools_offline_edit_inside_the_mask_only(services, bus, settings, database_url):
    """Erase removes the circled object; fill paints the prompt's colour there; the rest is untouched."""
    await services.start("ledger")
    await services.start("pipeline")
    image, drawn = await put(settings, scene()), await put(settings, mask())
    erased = await edit(bus, "eraser", image=image, mask_image=drawn)
    filled = await edit(bus, "flux_fill", image=image, mask=drawn, prompt="a red rose", mask_type="manual",
                        sync=True, preserve_alpha=True)
    before = pixels(png(scene()))
    for gid in (erased, filled):
        events = await collect(bus, gid, timeout=60)
        assert events.statuses[-1] == "generating" and events.done.status.value == "done"
        after = pixels(await output_of(settings, events))
        assert after.shape == before.shape
        assert np.abs(after - before)[far_from_mask()].max() == 0  # outside the mask: the same pixels
        assert blue_share(after[inside_object()]) < 0.05 < 0.9 < blue_share(before[inside_object()])
        assert events.done.provider == "offline"

    erase = await collect(bus, erased)
    assert erase.step_types == ["fingertips_generate"]
    sent = erase.step("fingertips_generate").payload["input"]["provider_input"]
    assert sent["image"] == sent["image_url"] == sent["image_file"] == image
    assert sent["mask_url"] == sent["mask_file"] == drawn and "mask_image" not in sent
    assert erase.done.model == "bria/eraser" and erase.done.output_key == f"mma/{erased}/1-eraser.png"
    assert erase.lines and erase.lines[0].text.startswith("Erasing")

    fill = await collect(bus, filled)
    assert fill.step_types == ["fingertips_prompt", "fingertips_generate"]
    helper = fill.step("fingertips_prompt").payload
    assert helper["input"]["ctx_key"] == "mma.ctx.fingertips_fill" and helper["input"]["model"] == "gpt-4o-mini"
    assert "a red rose" in helper["output"]["prompt"] and helper["output"]["fallback"] is False
    reds = pixels(await output_of(settings, fill))[inside_object()]
    assert (reds[..., 0] > reds[..., 2] + 40).mean() > 0.8
    row = await read_generation(database_url, filled, "done")
    assert row["mg_mma_mode"] == "fingertips" and row["mg_output_url"] == fill.done.output_url
    assert row["mg_model"] == "bria/genfill" and row["mg_type"] == "image"
    assert json.loads(row["mg_mma_vars"])["fingertips"]["modelKey"] == "flux_fill"


async def test_canvas_tools_offline(services, bus, settings, database_url):
    """Expand to a new ratio, cut a plain background to alpha, upscale 2x, trace to SVG."""
    await services.start("ledger")
    await services.start("pipeline")
    portrait = scene().transpose(Image.Transpose.ROTATE_90)  # 120 x 160
    source = await put(settings, portrait)
    studio = Image.new("RGB", (100, 80), (250, 250, 250))
    ImageDraw.Draw(studio).rectangle((30, 20, 70, 60), fill=(190, 40, 40))
    product = await put(settings, studio)
    gens = {
        "expand": await edit(bus, "expand", image=source, aspect_ratio="16:9"),
        "remove_bg": await edit(bus, "remove_bg", image=product),
        "upscale": await edit(bus, "upscale", image=source, scale_factor=2),
        "vectorize": await edit(bus, "vectorize", image=product),
    }
    done = {key: await collect(bus, gid, timeout=60) for key, gid in gens.items()}

    expand = done["expand"]
    sent = expand.step("fingertips_generate").payload["input"]["provider_input"]
    assert sent["canvas_size"] == [3840, 2160] and "aspect_ratio" not in sent
    assert expand.step("fingertips_prompt").payload["input"]["ctx_key"] == "mma.ctx.fingertips_expand"
    wide = Image.open(io.BytesIO(await output_of(settings, expand)))
    assert abs(wide.width / wide.height - 16 / 9) < 0.02 and wide.height == 160
    left = (wide.width - 120) // 2
    kept = np.asarray(wide.convert("RGB"))[:, left : left + 120]
    assert np.array_equal(kept, np.asarray(portrait))  # the original, untouched in the middle

    cut = Image.open(io.BytesIO(await output_of(settings, done["remove_bg"])))
    assert cut.mode == "RGBA"
    alpha = np.asarray(cut.getchannel("A"))
    assert alpha[0, 0] == 0 and alpha[-1, -1] == 0 and alpha[40, 50] == 255
    assert done["remove_bg"].step_types == ["fingertips_generate"]

    upscale = done["upscale"]
    assert upscale.step_types == ["fingertips_prompt", "fingertips_generate"]  # the magic refiner is captioned
    assert upscale.step("fingertips_prompt").payload["input"]["model"] == "gpt-4o"
    refiner = upscale.step("fingertips_generate").payload["input"]["provider_input"]
    assert "scale_factor" not in refiner  # not in the magic refiner's schema: dropped, as upstream
    assert refiner["prompt"] and refiner["negative_prompt"].startswith("teeth")
    assert refiner["resolution"] == "original"
    assert Image.open(io.BytesIO(await output_of(settings, upscale))).size == (240, 320)

    vector = done["vectorize"]
    svg = await output_of(settings, vector)
    assert vector.done.output_key.startswith(f"mma/{gens['vectorize']}/")
    assert vector.done.output_key.endswith("-vectorize.svg")
    assert b"<svg" in svg and b"<path" in svg
    row = await read_generation(database_url, gens["vectorize"], "done")
    assert row["mg_output_url"].endswith(".svg")


async def test_an_edit_that_cannot_read_its_image_fails_in_both_planes(services, bus, settings, database_url):
    """A missing image fails the edit (error, both log planes), nothing is stored."""
    await services.start("ledger")
    await services.start("pipeline")
    gid = await edit(bus, "eraser", image=f"{settings.assets_base_url}/uploads/missing.png",
                     mask_image=f"{settings.assets_base_url}/uploads/missing-mask.png")
    events = await collect(bus, gid, timeout=60)
    assert events.failed.code == "EDIT_FAILED" and events.failed.step_type == "fingertips_generate"
    row = await read_generation(database_url, gid, "error")
    assert row["mg_output_url"] is None


async def test_replicate_and_openai_through_their_sdks(services, bus, settings, replicate_server: ReplicateServer,
                                                      openai_server: OpenAIServer):
    """Model name vs pinned version, what each tool is sent, helper models and fallbacks, the OOM retry."""
    await services.start("ledger")
    await services.start("pipeline", provider="replicate", replicate_base_url=replicate_server.url,
                         replicate_api_token="r8-test", openai_api_key="sk-test",
                         openai_base_url=openai_server.base_url, provider_poll_interval_s=0.05, provider_max_attempts=2,
                         fetch_allow_hosts=json.dumps([replicate_server.host_port]))
    image, drawn = await put(settings, scene()), await put(settings, mask())

    erase = await collect(bus, await edit(bus, "eraser", image_url=image, mask_url=drawn), timeout=60)
    assert erase.done.provider == "replicate" and erase.done.model == "bria/eraser"
    created = replicate_server.bodies("create_prediction")[-1]
    assert set(created["input"]) == {"image", "image_url", "image_file", "mask_url", "mask_file"}
    assert created["input"]["mask_url"] == drawn and "version" not in created

    cut = await collect(bus, await edit(bus, "remove_bg", image=image), timeout=60)
    assert replicate_server.bodies("create_prediction")[-1]["version"] == BIREFNET_VERSION
    assert Image.open(io.BytesIO(await output_of(settings, cut))).mode == "RGBA"
    assert not cut.done.output_url.startswith(replicate_server.url)  # type: ignore[union-attr]

    vector = await collect(bus, await edit(bus, "vectorize", image=image), timeout=60)
    assert vector.done.output_key.endswith(".svg")  # type: ignore[union-attr]
    assert b"<svg" in await output_of(settings, vector)

    openai_server.answer_with(json.dumps({"prompt": "a glass of water on the table", "negative_prompt": "blur"}))
    fill = await collect(bus, await edit(bus, "flux_fill", image=image, mask=drawn, prompt="a glass"), timeout=60)
    asked = openai_server.bodies("chat_completion")[-1]
    assert asked["model"] == "gpt-4o-mini" and asked["temperature"] == 0.3 and asked["max_tokens"] == 300
    sent = replicate_server.bodies("create_prediction")[-1]["input"]
    assert (sent["prompt"], sent["negative_prompt"], sent["mask_type"]) == ("a glass of water on the table", "blur",
                                                                           "manual")
    assert fill.done.prompt == "a glass of water on the table"

    openai_server.answer_with("A shiny glass, please.")  # prose: it becomes the prompt, with the stock negative
    await collect(bus, await edit(bus, "flux_fill", image=image, mask=drawn, prompt="a glass"), timeout=60)
    sent = replicate_server.bodies("create_prediction")[-1]["input"]
    assert sent["prompt"] == "A shiny glass, please." and sent["negative_prompt"].startswith("blurry")

    openai_server.fail("chat_completion", 500, 500)  # both attempts fail: the customer's prompt is kept
    kept = await collect(bus, await edit(bus, "flux_fill", image=image, mask=drawn, prompt="a teapot"), timeout=60)
    assert replicate_server.bodies("create_prediction")[-1]["input"]["prompt"] == "a teapot"
    assert kept.step("fingertips_prompt").payload["output"]["fallback"] is True

    await collect(bus, await edit(bus, "expand", image=image, aspect_ratio="9:16"), timeout=60)
    asked = openai_server.bodies("chat_completion")[-1]
    vision = next(p for p in asked["messages"][1]["content"] if p["type"] == "image_url")["image_url"]
    assert vision["detail"] == "high" and vision["url"].startswith("data:image/png;base64,")
    sent = replicate_server.bodies("create_prediction")[-1]["input"]
    assert sent["canvas_size"] == [2160, 3840] and "aspect_ratio" not in sent

    openai_server.answer_with("A cobalt ceramic vase on a linen wall.")
    replicate_server.failures_left = 1
    replicate_server.failure_error = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB"
    refined = await collect(bus, await edit(bus, "upscale", image=image), timeout=60)
    assert openai_server.bodies("chat_completion")[-1]["model"] == "gpt-4o"
    first, retry = (b["input"] for b in replicate_server.bodies("create_prediction")[-2:])
    assert first["resolution"] == "original" and first["prompt"] == "A cobalt ceramic vase on a linen wall."
    assert (retry["resolution"], retry["steps"], retry["creativity"], retry["guidance_scale"]) == ("2048", 16, 0.2, 6)
    assert refined.step("fingertips_generate").payload["output"]["low_memory_retry"] is True

    replicate_server.svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><path d="M0 0h9v9z"/></svg>'
    unsafe = await collect(bus, await edit(bus, "vectorize", image=image), timeout=60)
    assert unsafe.failed.code == "EDIT_FAILED"  # an SVG that could run script on our origin is never stored

    replicate_server.fail_predictions = True
    failed = await collect(bus, await edit(bus, "remove_bg", image=image), timeout=60)
    assert failed.failed.code == "REPLICATE_FAILED"


def test_the_offline_editor_answers_every_model_it_claims_and_loads_opencv_only_when_editing():
    """The pipeline starts without OpenCV/NumPy (cold start); the editor's list of models is its pixels' list."""
    import subprocess
    import sys

    from services.pipeline.adapters.offline_edits import OFFLINE_EDIT_MODELS
    from services.pipeline.adapters.offline_pixels import EDITS

    assert set(EDITS) == OFFLINE_EDIT_MODELS
    probe = ("import sys, services.pipeline.app; "
             "print(sorted(m for m in ('cv2', 'numpy', 'vtracer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
