"""The offline provider: no network, deterministic, yet it really looks and really renders.

Scans open the image with Pillow (size, dominant colours, brightness) to write their
captions; predictions render a PNG (stills) or a short MP4 pan/zoom (videos, with the
ffmpeg binary shipped by imageio-ffmpeg). So `make up` works with no keys at all.
"""

from __future__ import annotations

import asyncio
import colorsys
import hashlib
import io
import json
import os
import subprocess
import tempfile
from typing import Any, TypedDict, TypeVar

import imageio_ffmpeg
from PIL import Image, ImageDraw, ImageFilter, ImageStat, UnidentifiedImageError
from pydantic import BaseModel

from libs.assets import AssetStore
from libs.errors import ProviderError
from services.pipeline.adapters.protocols import Completion, PredictionOutput, ScanResult
from services.pipeline.answers import WrittenAnswer

A = TypeVar("A", bound=BaseModel)

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

    async def scan(self, image: bytes, *, system: str, purpose: str) -> ScanResult:
        await _latency(self.latency_ms)
        facts = await asyncio.to_thread(analyse_image, image)
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


def _palette_of(prompt: str) -> list[tuple[int, int, int]]:
    """Colours named in the prompt first, then colours derived from its hash."""
    words = prompt.lower()
    named = [NAMED_COLOURS[n] for n in NAMED_COLOURS if n in words]
    digest = hashlib.sha256(prompt.encode()).digest()
    derived = []
    for i in range(3):
        r, g, b = colorsys.hsv_to_rgb(digest[i] / 255, 0.35 + digest[i + 3] / 700, 0.55 + digest[i + 6] / 700)
        derived.append((int(r * 255), int(g * 255), int(b * 255)))
    return (named + derived)[:3]


def render_still(prompt: str, size: tuple[int, int] = (512, 512)) -> bytes:
    """A visible composition: gradient backdrop, a lit object on a plinth, a soft shadow."""
    width, height = size
    top, bottom, accent = _palette_of(prompt)
    image = Image.new("RGB", size)
    draw = ImageDraw.Draw(image)
    for y in range(height):
        t = y / max(1, height - 1)
        draw.line([(0, y), (width, y)], fill=tuple(int(top[i] * (1 - t) + bottom[i] * t) for i in range(3)))
    shadow = Image.new("L", size, 0)
    ImageDraw.Draw(shadow).ellipse([width * 0.25, height * 0.78, width * 0.75, height * 0.88], fill=140)
    image.paste((0, 0, 0), mask=shadow.filter(ImageFilter.GaussianBlur(12)))
    draw = ImageDraw.Draw(image)
    plinth = (min(255, bottom[0] + 40), min(255, bottom[1] + 40), min(255, bottom[2] + 40))
    draw.rectangle([width * 0.3, height * 0.62, width * 0.7, height * 0.82], fill=plinth)
    draw.ellipse([width * 0.34, height * 0.22, width * 0.66, height * 0.64], fill=accent,
                 outline=(250, 250, 250), width=3)
    draw.ellipse([width * 0.42, height * 0.28, width * 0.5, height * 0.36], fill=(255, 255, 255))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def render_video(still: bytes | None, prompt: str, seconds: float = 1.5, fps: int = 12) -> bytes:
    """A short H.264 MP4: a slow push-in over the still (rendered from the prompt if none)."""
    source = Image.open(io.BytesIO(still or render_still(prompt))).convert("RGB")
    size = (320, 320)
    frames = max(2, int(seconds * fps))
    handle, path = tempfile.mkstemp(suffix=".mp4")
    os.close(handle)
    try:
        writer = imageio_ffmpeg.write_frames(path, size, fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                             macro_block_size=16, ffmpeg_log_level="error")
        writer.send(None)
        w, h = source.size
        for i in range(frames):
            zoom = 1.0 + 0.25 * i / (frames - 1)
            cw, ch = w / zoom, h / zoom
            left, upper = (w - cw) / 2, (h - ch) / 2
            frame = source.resize(size, box=(left, upper, left + cw, upper + ch))
            writer.send(frame.tobytes())
        writer.close()
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


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
    """Predictions rendered in-process; the id is a hash of the input, so a resume finds it again."""

    provider = "offline"

    def __init__(self, store: AssetStore, latency_ms: int = 0) -> None:
        self.store = store
        self.latency_ms = latency_ms

    async def create(self, *, model: str, input: dict[str, Any]) -> str:
        await _latency(self.latency_ms)
        digest = hashlib.sha256(json.dumps([model, input], sort_keys=True, default=str).encode()).hexdigest()
        return f"offline-{digest[:20]}"

    async def wait(
        self, prediction_id: str, *, model: str, input: dict[str, Any], timeout_s: float
    ) -> PredictionOutput:
        await _latency(self.latency_ms)
        prompt = str(input.get("prompt", ""))
        start_image = input.get("start_image")
        if start_image or "kling" in model:
            still = await self.store.get_bytes(str(start_image)) if start_image else None
            seconds = min(2.0, float(input.get("duration", 5)) / 4)
            data = await asyncio.to_thread(render_video, still, prompt, seconds)
            return PredictionOutput(prediction_id=prediction_id, data=data, content_type="video/mp4")
        data = await asyncio.to_thread(render_still, prompt)
        return PredictionOutput(prediction_id=prediction_id, data=data, content_type="image/png")

    async def cancel(self, prediction_id: str) -> None:
        return None
