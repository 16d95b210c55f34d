"""The offline provider works on the customer's real images: what they would see in the output.

Adapter-level tests drive OfflinePredictor through its protocol (create, wait) with real PNGs in
a real local asset store; the flow test at the end runs create -> tweak -> animate through the
pipeline, so the generate step's references reach the provider.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import pytest
from PIL import Image, ImageChops, ImageDraw, ImageStat

from libs.assets import LocalAssetStore, build_asset_store
from libs.schemas import Assets, Feedback, Flow, GenerationRequest, Inputs
from services.pipeline.adapters.offline import OfflinePredictor
from services.pipeline.adapters.protocols import CONTEXT_KEY
from tests.pipeline.conftest import collect, publish_job

RED = (205, 30, 35)


def red_bottle(background: tuple[int, int, int] = (255, 255, 255), size: tuple[int, int] = (300, 400)) -> Image.Image:
    """A red bottle with a white label, photographed on a plain background."""
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    w, h = size
    draw.rectangle([w * 0.3, h * 0.35, w * 0.7, h * 0.9], fill=RED)
    draw.rectangle([w * 0.43, h * 0.15, w * 0.57, h * 0.36], fill=RED)
    draw.rectangle([w * 0.38, h * 0.55, w * 0.62, h * 0.7], fill=(255, 255, 255))  # the label: white, inside
    return image


def flat(colour: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> Image.Image:
    return Image.new("RGB", size, colour)


def black_logo() -> Image.Image:
    image = Image.new("RGB", (200, 80), (255, 255, 255))
    ImageDraw.Draw(image).rectangle([20, 20, 180, 60], fill=(10, 10, 10))
    return image


def encoded(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def where(image: Image.Image, low: tuple[int, int, int], high: tuple[int, int, int]) -> Image.Image:
    """255 where every channel lies in [low, high], else 0."""
    bands = [band.point(lambda v, lo=lo, hi=hi: 255 if lo <= v <= hi else 0)
             for band, lo, hi in zip(image.convert("RGB").split(), low, high, strict=True)]
    return ImageChops.multiply(ImageChops.multiply(bands[0], bands[1]), bands[2])


def share(mask: Image.Image) -> float:
    return mask.histogram()[255] / (mask.width * mask.height)


def centre_x(weights: Image.Image) -> float:
    """The horizontal centre of mass of an L image, as a fraction of its width."""
    columns = [float(v) for v in weights.resize((weights.width, 1), Image.Resampling.BOX).get_flattened_data()]
    assert sum(columns) > 0
    return sum(i * v for i, v in enumerate(columns)) / sum(columns) / weights.width


def red(image: Image.Image) -> Image.Image:
    return where(image, (151, 0, 0), (255, 89, 89))


def red_share(image: Image.Image) -> float:
    return share(red(image))


def red_centre_x(image: Image.Image) -> float:
    return centre_x(red(image))


def mean(image: Image.Image, box: tuple[float, float, float, float] = (0, 0, 1, 1)) -> list[float]:
    w, h = image.size
    crop = image.crop((int(box[0] * w), int(box[1] * h), int(box[2] * w), int(box[3] * h)))
    return list(ImageStat.Stat(crop.convert("RGB")).mean)


def luminance(image: Image.Image) -> float:
    return float(ImageStat.Stat(image.convert("L")).mean[0])


class Offline:
    """The predictor with a real local store; `put` uploads an image, `run` predicts."""

    def __init__(self, root: Path) -> None:
        self.store = LocalAssetStore(root, "http://127.0.0.1:9/assets", "secret", "http://127.0.0.1:9")
        self.predictor = OfflinePredictor(self.store)

    async def put(self, image: Image.Image | bytes) -> str:
        data = image if isinstance(image, bytes) else encoded(image)
        return (await self.store.put_bytes(data, folder="uploads", content_type="image/png")).url

    async def run(self, model: str, input: dict[str, Any]) -> bytes:
        prediction_id = await self.predictor.create(model=model, input=input)
        out = await self.predictor.wait(prediction_id, model=model, input=input, timeout_s=30)
        assert out.data is not None
        return out.data

    async def still(self, settings: dict[str, Any] | None = None, **context: Any) -> Image.Image:
        data = await self.run("bytedance/seedream-4", {"prompt": "a product still", **(settings or {}),
                                                       CONTEXT_KEY: context})
        return decoded(data)

    async def tweak(self, parent: Image.Image, feedback: str) -> Image.Image:
        url = await self.put(parent)
        return decoded(await self.run("bytedance/seedream-4", {"prompt": "revised", CONTEXT_KEY: {
            "still": url, "feedback": feedback}}))

    async def video(self, still: Image.Image, brief: str, **context: Any) -> list[Image.Image]:
        url = await self.put(still)
        data = await self.run("kwaivgi/kling-v2.1", {"prompt": "motion", "duration": 5, "start_image": url,
                                                     CONTEXT_KEY: {"motion_brief": brief, **context}})
        return frames_of(data, self.store.root)


def frames_of(video: bytes, folder: Path) -> list[Image.Image]:
    path = folder / "clip.mp4"
    path.write_bytes(video)
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return [Image.frombytes("RGB", meta["size"], frame) for frame in reader]


@pytest.fixture
def offline(tmp_path: Path) -> Offline:
    return Offline(tmp_path / "store")


async def test_the_product_is_cut_out_and_placed_in_a_scene(offline):
    """A red bottle on white: its red shows in the output, its white background does not."""
    image = await offline.still(product=await offline.put(red_bottle()))
    assert red_share(image) > 0.04  # the customer's product, at a readable size
    corner = mean(image, (0, 0, 0.15, 0.15))
    assert min(corner) < 230, corner  # the studio white was cut away, a scene is behind
    near_white = share(where(image, (246, 246, 246), (255, 255, 255)))
    label = mean(image, (0.45, 0.5, 0.55, 0.7))
    assert near_white < 0.05 and max(label) > 200  # only the label is white: kept, being inside the bottle


async def test_the_scene_takes_the_inspirations_colours(offline):
    """Blue inspiration -> a blue scene; orange inspiration -> an orange one (same product)."""
    product = await offline.put(red_bottle())
    blue = await offline.still(product=product, inspirations=[await offline.put(flat((40, 70, 200)))])
    orange = await offline.still(product=product, inspirations=[await offline.put(flat((235, 130, 40)))])
    blue_sky, orange_sky = mean(blue, (0, 0, 1, 0.2)), mean(orange, (0, 0, 1, 0.2))
    assert blue_sky[2] > blue_sky[0] + 40, blue_sky
    assert orange_sky[0] > orange_sky[2] + 40, orange_sky


async def test_the_brief_and_the_preset_light_the_scene(offline):
    """No inspiration: "dark luxury" gives a dark scene, "minimal studio" a light one."""
    product = await offline.put(red_bottle())
    dark = await offline.still(product=product, brief="the bottle at night", style="dark luxury")
    light = await offline.still(product=product, brief="the bottle", style="minimal studio")
    assert luminance(dark.crop((0, 0, dark.width, dark.height // 5))) < 90
    assert luminance(light.crop((0, 0, light.width, light.height // 5))) > 170


@pytest.mark.parametrize(("aspect", "ratio"), [("16:9", 16 / 9), ("9:16", 9 / 16), ("1:1", 1.0), ("4:5", 0.8)])
async def test_the_requested_aspect_ratio(offline, aspect, ratio):
    image = await offline.still({"aspect_ratio": aspect, "size": "2K"}, product=await offline.put(red_bottle()))
    assert abs(image.width / image.height - ratio) < 0.01
    assert max(image.size) == 1024


async def test_the_logo_goes_where_the_brief_asks(offline):
    product, logo = await offline.put(red_bottle()), await offline.put(black_logo())
    top_left = await offline.still(product=product, logo=logo, brief="logo in the top left corner")
    bare = await offline.still(product=product, logo=logo, brief="no logo please")
    assert max(mean(top_left, (0.07, 0.06, 0.19, 0.08))) < 60  # the black logo
    assert min(mean(bare, (0.07, 0.06, 0.19, 0.08))) > 120
    assert min(mean(top_left, (0.75, 0.85, 0.97, 0.97))) > 60  # not in its default corner


async def test_a_tweak_does_what_its_feedback_says(offline):
    """warmer -> more red against blue; closer -> a bigger product; darker -> lower luminance."""
    parent = await offline.still(product=await offline.put(red_bottle()),
                                 inspirations=[await offline.put(flat((150, 160, 170)))])
    warmer, closer, darker = [await offline.tweak(parent, words) for words in ("warmer", "closer", "darker")]

    def balance(image: Image.Image) -> float:
        r, _g, b = mean(image)
        return r / b

    assert balance(warmer) > balance(parent) * 1.05
    assert red_share(closer) > red_share(parent) * 1.2
    assert luminance(darker) < luminance(parent) * 0.9
    same = await offline.tweak(parent, "hmm, not sure")
    assert same.size == parent.size and abs(luminance(same) - luminance(parent)) < 1  # not understood: unchanged


async def test_tweak_words_turn_around_and_scale(offline):
    """"too dark" brightens; "a bit cooler" moves less than "much cooler"; "further" shrinks the product."""
    parent = await offline.still(product=await offline.put(red_bottle()))
    assert luminance(await offline.tweak(parent, "it is too dark")) > luminance(parent) * 1.05
    bit, much = await offline.tweak(parent, "a bit cooler"), await offline.tweak(parent, "much cooler")
    assert mean(much)[2] - mean(much)[0] > mean(bit)[2] - mean(bit)[0] > mean(parent)[2] - mean(parent)[0]
    assert red_share(await offline.tweak(parent, "further away")) < red_share(parent) * 0.8


async def test_the_video_moves_the_still_as_asked(offline):
    """push-in: the product grows; pan left: the scene slides right; a light sweep crosses left to right."""
    still = await offline.still({"aspect_ratio": "1:1"}, product=await offline.put(red_bottle()))
    push = await offline.video(still, "slow push-in on the bottle")
    assert len(push) >= 10 and max(push[0].size) <= 400
    assert red_share(push[-1]) > red_share(push[0]) * 1.1
    pan = await offline.video(still, "pan left")
    assert red_centre_x(pan[-1]) > red_centre_x(pan[0]) + 0.05
    sweep = await offline.video(still, "a light sweep across the label")

    def light_x(frame: Image.Image) -> float:
        return centre_x(ImageChops.subtract(frame.convert("L"), sweep[0].convert("L")))

    third = len(sweep) // 3
    assert light_x(sweep[third]) < light_x(sweep[2 * third]) - 0.1


async def test_a_video_tweak_changes_the_previous_move(offline):
    """The previous clip panned left; "the other way" pans right, "zoom out instead" pulls back."""
    still = await offline.still({"aspect_ratio": "16:9"}, product=await offline.put(red_bottle()))
    back = await offline.video(still, "", previous_motion="Slow cinematic motion: pan left", feedback="the other way")
    assert red_centre_x(back[-1]) < red_centre_x(back[0]) - 0.05
    out = await offline.video(still, "", previous_motion="push-in", feedback="zoom out instead")
    assert red_share(out[-1]) < red_share(out[0]) * 0.9


async def test_create_tweak_and_animate_through_the_pipeline(services, bus, settings):
    """The pipeline hands the provider the customer's images and words: the red product shows,
    the blue inspiration colours the scene, "warmer" warms the parent, "pan right" moves it."""
    await services.start("ledger")
    await services.start("pipeline")
    store = build_asset_store(settings)

    async def upload(image: Image.Image) -> str:
        return (await store.put_bytes(encoded(image), folder="uploads", content_type="image/png")).url

    async def output(url: str | None) -> bytes:
        assert url
        return await store.get_bytes(url)

    request = GenerationRequest(
        assets=Assets(product_image_url=await upload(red_bottle()),
                      inspiration_image_urls=[await upload(flat((40, 70, 200)))]),
        inputs=Inputs(user_brief="the bottle on a blue set", aspect_ratio="16:9"), vision_intelligence=False)
    still = await publish_job(bus, Flow.STILL_CREATE, request)
    events = await collect(bus, still, timeout=60)
    generate = events.step("seedream_generate").payload["input"]
    assert CONTEXT_KEY not in generate["provider_input"] and len(generate["provider_input"]["image_input"]) == 2
    created = decoded(await output(events.done.output_url))
    assert abs(created.width / created.height - 16 / 9) < 0.01 and red_share(created) > 0.02
    sky = mean(created, (0, 0, 1, 0.2))
    assert sky[2] > sky[0] + 40

    tweak = await publish_job(bus, Flow.STILL_TWEAK, GenerationRequest(feedback=Feedback(still_feedback="warmer")),
                              parent=still)
    warmer = decoded(await output((await collect(bus, tweak, timeout=60)).done.output_url))
    assert warmer.size == created.size
    assert mean(warmer)[0] / mean(warmer)[2] > mean(created)[0] / mean(created)[2] * 1.05

    animate = await publish_job(bus, Flow.VIDEO_ANIMATE, GenerationRequest(
        assets=Assets(input_still_generation_id=tweak), inputs=Inputs(motion_user_brief="pan right", duration_s=5)),
        price=5)
    clip = frames_of(await output((await collect(bus, animate, timeout=60)).done.output_url), settings.assets_path)
    assert red_centre_x(clip[-1]) < red_centre_x(clip[0]) - 0.05  # the camera goes right: the scene slides left
