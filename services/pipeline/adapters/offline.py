"""The offline provider: no network, deterministic, yet it really looks and really renders.

Scans open the image with Pillow (size, dominant colours, brightness) to write their
captions. Predictions work on the customer's own images (docs/offline-provider.md): a still
is their product, cut out, standing in a scene made from their inspirations, brief and
preset, with its logo (offline_look, offline_compose); a tweak applies what its feedback
says to the previous still (offline_tweak); a video moves the still as the motion brief
says (offline_motion). So `make up` works with no keys at all, and shows the customer's
product.

Nothing big waits with a run: a prediction sleeps its latency first and renders after,
and a scan reads its image's facts first and lets the bytes go before it sleeps. Being
deterministic, the renders and the image facts are remembered for a few inputs
(`Memo`), so identical requests (the bench's thousands) cost one render, not one each.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import subprocess
import tempfile
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Generic, TypedDict, TypeVar

import imageio_ffmpeg
import orjson
from PIL import Image, ImageStat, UnidentifiedImageError
from pydantic import BaseModel

from libs.assets import AssetStore
from libs.errors import InvalidInputError, ProviderError, ServiceUnavailableError
from services.pipeline.adapters.offline_compose import canvas_size, compose, logo_spot
from services.pipeline.adapters.offline_look import cut_out, look_of, png, read_image
from services.pipeline.adapters.offline_motion import parse_motion, render_motion
from services.pipeline.adapters.offline_tweak import apply, parse_feedback
from services.pipeline.adapters.protocols import CONTEXT_KEY, Completion, PredictionOutput, ScanResult
from services.pipeline.answers import WrittenAnswer

A = TypeVar("A", bound=BaseModel)
K = TypeVar("K")
V = TypeVar("V")


class Memo(Generic[K, V]):
    """The last `size` results of a deterministic computation by key; callers asking for a key being
    computed share its one computation (a failure is not remembered)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.entries: OrderedDict[K, asyncio.Future[V]] = OrderedDict()

    async def get(self, key: K, compute: Callable[[], Awaitable[V]]) -> V:
        found = self.entries.get(key)
        if found is None:
            found = asyncio.ensure_future(compute())
            self.entries[key] = found
            found.add_done_callback(lambda done: self._drop_failed(key, done))
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        else:
            self.entries.move_to_end(key)
        return await asyncio.shield(found)

    def _drop_failed(self, key: K, done: asyncio.Future[V]) -> None:
        if (done.cancelled() or done.exception() is not None) and self.entries.get(key) is done:
            del self.entries[key]

NAMED_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (20, 20, 20), "white": (240, 240, 240), "grey": (128, 128, 128), "red": (200, 40, 40),
    "orange": (230, 130, 40), "yellow": (230, 210, 60), "green": (60, 160, 80), "teal": (40, 150, 150),
    "blue": (50, 90, 200), "purple": (130, 60, 170), "pink": (230, 130, 170), "brown": (120, 80, 50),
    "beige": (220, 200, 170), "gold": (212, 175, 55),
}


def colour_name(rgb: tuple[int, int, int]) -> str:
    return min(NAMED_COLOURS, key=lambda n: sum((a - b) ** 2 for a, b in zip(NAMED_COLOURS[n], rgb, strict=True)))


class ImageFacts(TypedDict):
    width: int
    height: int
    orientation: str
    brightness: float
    colours: list[str]
    format: str


def analyse_image(data: bytes) -> ImageFacts:
    """Size, orientation, brightness and the three dominant colours of an image."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise ProviderError("the image could not be read", code="SCAN_FAILED") from exc
    width, height = image.size
    rgb = image.convert("RGB")
    small = rgb.copy()
    small.thumbnail((64, 64))
    brightness = ImageStat.Stat(small.convert("L")).mean[0] / 255.0
    quantised = small.quantize(colors=4)
    palette = quantised.getpalette() or []
    counts = sorted(quantised.getcolors() or [], reverse=True)
    colours: list[str] = []
    for _count, index in counts:
        base = int(index) * 3 if isinstance(index, int) else 0
        name = colour_name((palette[base], palette[base + 1], palette[base + 2]))
        if name not in colours:
            colours.append(name)
    orientation = "square" if abs(width - height) < max(width, height) * 0.05 else (
        "landscape" if width > height else "portrait")
    return ImageFacts(width=width, height=height, orientation=orientation, brightness=round(brightness, 3),
                      colours=colours[:3], format=image.format or "unknown")


def _mood(brightness: float) -> str:
    return "bright, airy" if brightness > 0.65 else "dark, moody" if brightness < 0.3 else "balanced, soft"


async def _latency(ms: int) -> None:
    if ms > 0:
        await asyncio.sleep(ms / 1000)


class OfflineScanner:
    provider = "offline"
    model = "offline-vision-1"

    def __init__(self, latency_ms: int = 0) -> None:
        self.latency_ms = latency_ms
        self.facts: Memo[bytes, ImageFacts] = Memo(256)

    async def scan(self, image: bytes, *, system: str, purpose: str) -> ScanResult:
        """The image's facts are read at once (the bytes are not held through the latency)."""
        facts = await self.facts.get(hashlib.sha256(image).digest(), partial(asyncio.to_thread, analyse_image, image))
        del image
        await _latency(self.latency_ms)
        colours = ", ".join(facts["colours"]) or "neutral"
        subject = purpose.replace("_", " ")
        crt = (f"{facts['orientation']} {subject} image, {facts['width']}x{facts['height']}, "
               f"{_mood(facts['brightness'])} light, dominant colours {colours}")
        tags = [f"colour.{c}" for c in facts["colours"]] + [f"light.{_mood(facts['brightness']).split(',')[0]}"]
        line = f"I see {colours} tones in your {subject}, {_mood(facts['brightness']).split(',')[0]} light."
        return ScanResult(crt=crt, tags=tags, user_line=line, details=facts)


class OfflineCompleter:
    provider = "offline"
    model = "offline-writer-1"

    def __init__(self, latency_ms: int = 0) -> None:
        self.latency_ms = latency_ms

    async def complete(
        self, *, system: str, user: str, schema: type[A], image_urls: list[str] | None = None
    ) -> Completion:
        await _latency(self.latency_ms)
        if not issubclass(schema, WrittenAnswer):
            raise ProviderError(f"offline writer cannot answer {schema.__name__}", code="OFFLINE_ERROR")
        return Completion(answer=schema.offline(user), input_tokens=len(user.split()), output_tokens=40)


def render_still(prompt: str, size: tuple[int, int] = (512, 512)) -> bytes:
    """A still from words alone (no reference image): the scene the prompt's colours and moods make."""
    return png(compose(None, None, look_of([], prompt), size))


def render_video(still: bytes | None, prompt: str, seconds: float = 1.5) -> bytes:
    """A short MP4 moving the still (or, with none, the prompt's scene) as the prompt says."""
    return render_motion(still or render_still(prompt), parse_motion(brief=prompt), seconds)


def first_frame(video: bytes) -> bytes:
    """The first frame of an MP4 as PNG bytes (postscan of a video)."""
    handle, path = tempfile.mkstemp(suffix=".mp4")
    os.close(handle)
    try:
        with open(path, "wb") as fh:
            fh.write(video)
        result = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", path, "-frames:v", "1", "-f", "image2pipe",
             "-vcodec", "png", "-"], capture_output=True, check=False, timeout=30,
        )
        if result.returncode != 0 or not result.stdout:
            raise ProviderError("the video could not be read", code="SCAN_FAILED")
        return result.stdout
    finally:
        os.unlink(path)


class OfflinePredictor:
    """Predictions rendered in-process; the id is a hash of the input, so a resume finds it again.

    It reads what the pipeline knows about the request from `input[CONTEXT_KEY]` (which image is
    the product, the logo, the inspirations, the previous still; the brief, style and feedback),
    and falls back to the prompt's words when a job carries none.
    """

    provider = "offline"

    def __init__(self, store: AssetStore, latency_ms: int = 0, predict_latency_ms: int | None = None) -> None:
        self.store = store
        self.latency_ms = latency_ms
        self.predict_latency_ms = latency_ms if predict_latency_ms is None else predict_latency_ms
        self.renders: Memo[str, tuple[bytes, str]] = Memo(8)

    async def create(self, *, model: str, input: dict[str, Any]) -> str:
        await _latency(self.latency_ms)
        digest = hashlib.sha256(orjson.dumps([model, input], option=orjson.OPT_SORT_KEYS, default=str)).hexdigest()
        return f"offline-{digest[:20]}"

    async def _read(self, url: str, what: str) -> bytes:
        try:
            return await self.store.get_bytes(url)
        except (InvalidInputError, ServiceUnavailableError) as exc:
            raise ProviderError(f"the {what} image could not be read", code="PREDICTION_FAILED",
                                is_retryable=isinstance(exc, ServiceUnavailableError)) from exc

    async def wait(
        self, prediction_id: str, *, model: str, input: dict[str, Any], timeout_s: float
    ) -> PredictionOutput:
        """The prediction's time passes first, then it renders (the same id: the same render, shared)."""
        await _latency(self.predict_latency_ms)
        data, content_type = await self.renders.get(prediction_id, lambda: self._render(model, input))
        return PredictionOutput(prediction_id=prediction_id, data=data, content_type=content_type)

    async def _render(self, model: str, input: dict[str, Any]) -> tuple[bytes, str]:
        context: dict[str, Any] = dict(input.get(CONTEXT_KEY) or {})
        prompt = str(input.get("prompt", ""))
        start_image = input.get("start_image")
        if start_image or "kling" in model:
            still = await self._read(str(start_image), "start") if start_image else None
            seconds = min(2.0, float(input.get("duration", 5)) / 4)
            motion = parse_motion(context.get("feedback"), _words(context, "motion_brief", "movement_style"),
                                  context.get("previous_motion") or prompt)
            data = await asyncio.to_thread(render_motion, still or render_still(prompt), motion, seconds)
            return data, "video/mp4"
        if context.get("still"):
            previous = await self._read(str(context["still"]), "previous")
            data = await asyncio.to_thread(_tweaked, previous, str(context.get("feedback") or ""))
        else:
            data = await self._created(input, context, prompt)
        return data, "image/png"

    async def _created(self, input: dict[str, Any], context: dict[str, Any], prompt: str) -> bytes:
        urls = [context.get("product"), context.get("logo"), *(context.get("inspirations") or [])[:4]]
        names = ["product", "logo"] + ["inspiration"] * (len(urls) - 2)
        read = await asyncio.gather(*(self._read(str(u), n) for u, n in zip(urls, names, strict=True) if u))
        found = iter(read)
        product, logo = (next(found) if urls[0] else None), (next(found) if urls[1] else None)
        words = _words(context, "brief", "style") or prompt
        return await asyncio.to_thread(_composed, product, logo, list(found), words, input)

    async def cancel(self, prediction_id: str) -> None:
        return None


def _words(context: dict[str, Any], *keys: str) -> str:
    return ". ".join(str(context[k]) for k in keys if context.get(k))


def _composed(product: bytes | None, logo: bytes | None, inspirations: list[bytes], words: str,
              settings: dict[str, Any]) -> bytes:
    item = cut_out(read_image(product, "product")) if product else None
    mark = cut_out(read_image(logo, "logo")) if logo else None
    scenes = [read_image(data, "inspiration") for data in inspirations]
    match = item.size if item is not None else None
    look = look_of(scenes, words, item)
    return png(compose(item, mark, look, canvas_size(settings, match), logo_spot(words)))


def _tweaked(previous: bytes, feedback: str) -> bytes:
    return png(apply(read_image(previous, "previous"), parse_feedback(feedback)))
