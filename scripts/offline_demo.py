"""Make the pictures of docs/offline-provider.md against a running stack (`make up`, no keys).

    PYTHONPATH=. .venv/bin/python scripts/offline_demo.py http://127.0.0.1:8080 docs/images

A new anonymous customer uploads a product shot on white, a logo and two inspirations (drawn
here, so the script needs no files), creates a still, tweaks it ("warmer and closer") and
animates the tweak; the inputs, both stills and frames of the video are saved as PNGs.
"""

from __future__ import annotations

import base64
import io
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import imageio_ffmpeg
from PIL import Image, ImageDraw, ImageFilter

BRIEF = "A perfume bottle on travertine at golden hour, logo in the top left"
STYLE = "editorial, warm"


def perfume() -> Image.Image:
    """A packshot: a ruby glass bottle with a gold cap and a cream label, on studio white."""
    w, h = 700, 900
    image = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = 210, 490, 330, 820
    for x in range(left, right):
        t = (x - left) / (right - left)
        shade = 0.55 + 0.6 * math.sin(math.pi * t) - 0.25 * max(0.0, t - 0.75)
        colour = (min(255, int(178 * shade + 20)), int(28 * shade), int(52 * shade))
        draw.line([(x, top), (x, bottom)], fill=colour)
    draw.rounded_rectangle([left, top - 6, right, top + 30], radius=18, fill=(150, 20, 40))
    draw.rectangle([300, 230, 400, 330], fill=(140, 18, 38))
    for x in range(280, 420):  # the gold cap, lit from the left
        t = (x - 280) / 140
        k = 0.7 + 0.45 * math.sin(math.pi * t)
        draw.line([(x, 110), (x, 232)], fill=(min(255, int(212 * k)), min(255, int(172 * k)), int(70 * k)))
    draw.line([(250, 360), (250, 780)], fill=(235, 140, 150), width=6)  # a highlight on the glass
    draw.rounded_rectangle([262, 520, 438, 690], radius=6, fill=(246, 238, 222))
    draw.text((350, 585), "ROUGE", fill=(90, 20, 30), font_size=34, anchor="mm")
    draw.text((350, 630), "eau de parfum", fill=(120, 60, 60), font_size=16, anchor="mm")
    return image


def logo() -> Image.Image:
    image = Image.new("RGB", (520, 180), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.ellipse([20, 30, 140, 150], outline=(24, 24, 24), width=10)
    draw.ellipse([58, 68, 102, 112], fill=(24, 24, 24))
    draw.text((170, 90), "MAISON", fill=(24, 24, 24), font_size=72, anchor="lm")
    return image


def sunset() -> Image.Image:
    """Warm light through a window: a peach-to-rose gradient with out-of-focus highlights."""
    w, h = 800, 600
    image = Image.new("RGB", (w, h))
    draw = ImageDraw.Draw(image)
    for y in range(h):
        t = y / h
        draw.line([(0, y), (w, y)], fill=(int(248 - 60 * t), int(176 - 90 * t), int(110 - 20 * t)))
    rng = random.Random(7)
    for _ in range(30):
        x, y, r = rng.randrange(w), rng.randrange(h // 2), rng.randrange(14, 60)
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 214, 160))
    return image.filter(ImageFilter.GaussianBlur(6))


def travertine() -> Image.Image:
    """A beige stone: soft noise stretched into horizontal veins."""
    w, h = 800, 600
    noise = Image.effect_noise((w // 8, h // 2), 60).resize((w, h), Image.Resampling.BICUBIC)
    veins = noise.filter(ImageFilter.GaussianBlur(2)).point(lambda v: 200 + (v - 128) // 4)
    base = Image.new("RGB", (w, h), (214, 196, 168))
    return Image.composite(base, Image.new("RGB", (w, h), (176, 156, 128)), veins)


def data_url(image: Image.Image) -> str:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def finished(http: httpx.Client, generation_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view: dict[str, Any] = http.get(f"/mma/generations/{generation_id}").json()
        if view.get("state") in ("done", "error"):
            if view["state"] == "error":
                raise SystemExit(f"generation {generation_id} failed: {view.get('error')}")
            return view
        time.sleep(0.5)
    raise SystemExit(f"generation {generation_id} did not finish in {timeout}s")


def sheet(images: list[Image.Image], height: int, gap: int = 12) -> Image.Image:
    scaled = [i.convert("RGB").resize((round(i.width * height / i.height), height)) for i in images]
    out = Image.new("RGB", (sum(i.width for i in scaled) + gap * (len(scaled) - 1), height), (255, 255, 255))
    x = 0
    for image in scaled:
        out.paste(image, (x, 0))
        x += image.width + gap
    return out


def video_frames(data: bytes, count: int = 4) -> list[Image.Image]:
    with tempfile.NamedTemporaryFile(suffix=".mp4") as fh:
        fh.write(data)
        fh.flush()
        reader = imageio_ffmpeg.read_frames(fh.name)
        meta = next(reader)
        frames = [Image.frombytes("RGB", meta["size"], f) for f in reader]
    return [frames[round(i * (len(frames) - 1) / (count - 1))] for i in range(count)]


def main(gateway: str, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    with httpx.Client(base_url=gateway, timeout=60.0) as http:
        pass_id = http.get("/credits/balance").headers["X-Mina-Pass-Id"]
        http.headers["X-Mina-Pass-Id"] = pass_id
        inputs = {"product": perfume(), "logo": logo(), "sunset": sunset(), "travertine": travertine()}
        urls = {}
        for name, image in inputs.items():
            kind = name if name in ("product", "logo") else "inspiration"
            answer = http.post("/api/r2/upload-signed", json={"dataUrl": data_url(image), "kind": kind,
                                                               "fileName": f"{name}.png"}).json()
            urls[name] = answer.get("publicUrl") or answer["url"]
        created = http.post("/mma/still/create", json={
            "assets": {"product_image_url": urls["product"], "logo_image_url": urls["logo"],
                       "inspiration_image_urls": [urls["sunset"], urls["travertine"]]},
            "inputs": {"brief": BRIEF, "style": STYLE, "aspect_ratio": "3:4"}}).json()
        still = finished(http, created["generation_id"])
        tweaked = http.post(f"/mma/still/{still['generation_id']}/tweak",
                            json={"feedback": {"still_feedback": "warmer and a bit closer"}}).json()
        tweak = finished(http, tweaked["generation_id"])
        animated = http.post("/mma/video/animate", json={
            "assets": {"input_still_generation_id": tweak["generation_id"]},
            "inputs": {"motion_user_brief": "slow push-in with a light sweep across the label"}}).json()
        video = finished(http, animated["generation_id"])
        create_png = http.get(still["outputs"]["seedream_image_url"]).content
        tweak_png = http.get(tweak["outputs"]["seedream_image_url"]).content
        clip = http.get(video["outputs"]["kling_video_url"]).content
    sheet(list(inputs.values()), 260).save(out_dir / "offline-inputs.png")
    (out_dir / "offline-create.png").write_bytes(create_png)
    (out_dir / "offline-tweak.png").write_bytes(tweak_png)
    sheet(video_frames(clip), 300, gap=6).save(out_dir / "offline-video-frames.png")
    print(f"pass id {pass_id}: still {still['generation_id']}, tweak {tweak['generation_id']}, "
          f"video {video['generation_id']} -> {out_dir}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8080",
         Path(sys.argv[2] if len(sys.argv) > 2 else "docs/images"))
