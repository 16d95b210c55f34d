"""The offline still composed: backdrop, floor, light, the product with its shadow, the logo.

The canvas follows the request: `aspect_ratio` (`W:H`, or `match_input_image`) and `size`
(1K/2K/4K, or `custom` with width/height). Offline stills are previews, so the long side is
capped (LONG_SIDE) to keep a still well under a second on a busy core. Blurs run on reduced
copies and are scaled back up: they are soft by nature.
"""

from __future__ import annotations

import re
from typing import Any

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps

from services.pipeline.adapters.offline_look import RGB, Look, mix

LONG_SIDE = {"1K": 768, "2K": 1024, "4K": 1280}
MAX_LONG_SIDE = 1280
RATIO = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[:x/]\s*(\d+(?:\.\d+)?)\s*$")
HORIZON = 0.64  # where the floor meets the wall, as a fraction of the height
BASE = 0.84  # where the product stands
LOGO_SPOTS = ("top left", "top right", "bottom left", "bottom right", "top", "bottom", "centre", "product")


def canvas_size(settings: dict[str, Any], match: tuple[int, int] | None = None) -> tuple[int, int]:
    """(width, height) of a still: the requested ratio, at the offline long side of the requested size."""
    size = str(settings.get("size") or "2K").strip().upper()
    long_side = LONG_SIDE.get(size, LONG_SIDE["2K"])
    ratio = 1.0
    aspect = str(settings.get("aspect_ratio") or "").strip().lower()
    found = RATIO.match(aspect)
    if size == "CUSTOM" and settings.get("width") and settings.get("height"):
        width, height = float(settings["width"]), float(settings["height"])
        ratio, long_side = width / height, min(MAX_LONG_SIDE, int(max(width, height)))
    elif found and float(found.group(2)) > 0:
        ratio = float(found.group(1)) / float(found.group(2))
    elif aspect == "match_input_image" and match:
        ratio = match[0] / match[1]
    ratio = min(4.0, max(0.25, ratio))
    width, height = (long_side, long_side / ratio) if ratio >= 1 else (long_side * ratio, long_side)
    return max(16, round(width / 2) * 2), max(16, round(height / 2) * 2)


def logo_spot(words: str) -> str | None:
    """Where the brief asks for the logo (None: it asks for no logo); bottom right unless told."""
    words = words.lower()
    if re.search(r"\b(no|without|hide|remove)\s+(the\s+)?logo\b", words):
        return None
    for clause in re.split(r"[.;,!?\n]", words):
        if "logo" not in clause:
            continue
        if re.search(r"\bon (the |its )?(product|bottle|label|pack\w*|box|jar|can|tube|front)\b", clause):
            return "product"
        vertical = "top" if re.search(r"\b(top|upper)\b", clause) else (
            "bottom" if re.search(r"\b(bottom|lower)\b", clause) else "")
        side = "left" if re.search(r"\bleft\b", clause) else "right" if re.search(r"\bright\b", clause) else ""
        if re.search(r"\b(cent(er|re)d?|middle)\b", clause) and not side:
            return vertical or "centre"
        if vertical or side:
            return f"{vertical or 'bottom'} {side}".strip() if side else vertical
    return "bottom right"


def _vertical(size: tuple[int, int], top: RGB, bottom: RGB) -> Image.Image:
    mask = Image.linear_gradient("L").resize(size, Image.Resampling.BILINEAR)
    return Image.composite(Image.new("RGB", size, bottom), Image.new("RGB", size, top), mask)


def _column(size: tuple[int, int], values: list[int]) -> Image.Image:
    """An L image of `size` whose rows follow `values` (top to bottom), stretched."""
    strip = Image.new("L", (1, len(values)))
    strip.putdata(values)
    return strip.resize(size, Image.Resampling.BILINEAR)


def glow_mask(size: tuple[int, int], centre: tuple[float, float], radius: float, strength: float) -> Image.Image:
    """A round light falling off from `centre` (L, 0..255*strength)."""
    peak = min(1.0, strength)
    lut = [round(255 * peak * max(0.0, 1 - v / 179) ** 2) for v in range(256)]
    spot = Image.radial_gradient("L").point(lut).resize((max(2, int(radius * 2)),) * 2, Image.Resampling.BILINEAR)
    mask = Image.new("L", size, 0)
    mask.paste(spot, (int(centre[0] - radius), int(centre[1] - radius)))
    return mask


def vignette(size: tuple[int, int], amount: float) -> Image.Image:
    """A multiply layer: white in the middle, edges and corners darkened by up to `amount`."""
    amount = min(0.7, amount)
    lut = [round(255 * (1 - amount * min(1.0, max(0.0, (v - 100) / 155)) ** 1.5)) for v in range(256)]
    return Image.radial_gradient("L").point(lut).resize(size, Image.Resampling.BILINEAR).convert("RGB")


def _backdrop(look: Look, size: tuple[int, int]) -> Image.Image:
    """Wall, floor and the light behind the product, at whatever (reduced) size it is asked."""
    w, h = size
    wall = _vertical(size, look.top, look.bottom)
    if look.texture is not None:
        texture = ImageOps.fit(look.texture, (max(8, w * 2 // 3), max(8, h * 2 // 3)), Image.Resampling.BILINEAR)
        texture = texture.filter(ImageFilter.GaussianBlur(max(1.0, w / 160))).resize(size, Image.Resampling.BICUBIC)
        wall = Image.blend(wall, texture, 0.6)
    horizon = int(h * HORIZON)
    floor_size = (w, h - horizon)
    floor = _vertical(floor_size, mix(look.floor, look.light, 0.15), mix(look.floor, (0, 0, 0), 0.3))
    if look.floor_texture is not None:
        texture = ImageOps.fit(look.floor_texture, floor_size, Image.Resampling.BILINEAR)
        texture = ImageChops.multiply(texture.filter(ImageFilter.GaussianBlur(max(1.0, w / 60))),
                                      Image.new("RGB", floor_size, mix(look.floor, (255, 255, 255), 0.5)))
        floor = Image.blend(floor, texture, 0.5)
    elif look.texture is not None:  # a satin floor: the wall's lower part, mirrored and blurred
        top = max(0, 2 * horizon - h)
        mirrored = wall.crop((0, top, w, horizon)).transpose(Image.Transpose.FLIP_TOP_BOTTOM).resize(floor_size)
        floor = Image.blend(floor, mirrored.filter(ImageFilter.GaussianBlur(max(1.0, w / 120))), 0.3)
    edge = max(2, h // 60)
    fade = [min(255, 255 * y // edge) for y in range(floor_size[1])]
    wall.paste(floor, (0, horizon), _column(floor_size, fade))
    light = Image.new("RGB", size, look.light)
    glow = glow_mask(size, (w / 2, h * (HORIZON - 0.2)), 0.62 * max(w, h), 0.25 + look.glow)
    return ImageChops.screen(wall, Image.composite(light, Image.new("RGB", size), glow))


def _place(product: Image.Image, size: tuple[int, int]) -> tuple[Image.Image, int, int]:
    """The product scaled to the canvas and the top-left corner it stands at."""
    w, h = size
    scale = min(0.58 * h / product.height, 0.62 * w / product.width)
    scaled = product.resize((max(1, round(product.width * scale)), max(1, round(product.height * scale))),
                            Image.Resampling.LANCZOS)
    return scaled, (w - scaled.width) // 2, int(h * BASE) - scaled.height


def _shadow(small: Image.Image, product: Image.Image, x: int, y: int, look: Look, factor: int) -> None:
    """The contact shadow and a short cast shadow, drawn into the reduced backdrop (they are soft)."""
    mask = Image.new("L", small.size, 0)
    draw = ImageDraw.Draw(mask)
    base = (y + product.height) / factor
    half = product.width * 0.5 / factor
    centre = (x + product.width / 2) / factor
    depth = max(1.5, product.height * 0.04 / factor)
    draw.ellipse([centre - half, base - depth, centre + half, base + depth], fill=235)
    cast_h = max(1, int(product.height * 0.16 / factor))
    cast = product.getchannel("A").resize((max(1, product.width // factor), cast_h))
    mask.paste(cast.point(lambda v: v * 110 // 255), (int((x + product.width * 0.12) / factor), int(base - cast_h)),
               cast)
    mask = mask.filter(ImageFilter.GaussianBlur(max(1.0, small.height * 0.012)))
    small.paste(mix(look.floor, (0, 0, 0), 0.8), (0, 0, *small.size), mask)


def _reflection(canvas: Image.Image, product: Image.Image, x: int, y: int) -> None:
    depth = min(product.height // 3, canvas.height - (y + product.height))
    if depth < 4:
        return
    mirrored = product.transpose(Image.Transpose.FLIP_TOP_BOTTOM).crop((0, 0, product.width, depth))
    fade = _column((product.width, depth), [round(60 * (1 - t / depth) ** 2) for t in range(depth)])
    alpha = ImageChops.multiply(mirrored.getchannel("A"), fade)
    canvas.paste(mirrored.convert("RGB"), (x, y + product.height), alpha)


def _logo(canvas: Image.Image, logo: Image.Image, spot: str, product_box: tuple[int, int, int, int] | None) -> None:
    w, h = canvas.size
    if spot == "product" and product_box:
        px, py, pw, ph = product_box
        scale = min(0.42 * pw / logo.width, 0.16 * ph / logo.height)
        cx, cy = px + pw / 2, py + ph * 0.55
    else:
        scale = min(0.22 * w / logo.width, 0.1 * h / logo.height)
        margin = 0.05 * min(w, h)
        lw, lh = logo.width * scale, logo.height * scale
        cx = margin + lw / 2 if "left" in spot else w - margin - lw / 2 if "right" in spot else w / 2
        cy = margin + lh / 2 if "top" in spot else h - margin - lh / 2 if "bottom" in spot else h / 2
    scaled = logo.resize((max(1, round(logo.width * scale)), max(1, round(logo.height * scale))),
                         Image.Resampling.LANCZOS)
    canvas.paste(scaled, (round(cx - scaled.width / 2), round(cy - scaled.height / 2)), scaled)


def grade(image: Image.Image, warmth: float) -> Image.Image:
    """Warm (+) or cool (-): red and blue moved against each other, green a little with red."""
    if not warmth:
        return image
    r, g, b = image.split()
    r = r.point([min(255, round(v * (1 + 0.1 * warmth))) for v in range(256)])
    g = g.point([min(255, round(v * (1 + 0.02 * warmth))) for v in range(256)])
    b = b.point([min(255, round(v * (1 - 0.1 * warmth))) for v in range(256)])
    return Image.merge("RGB", (r, g, b))


def compose(product: Image.Image | None, logo: Image.Image | None, look: Look, size: tuple[int, int],
            spot: str | None = "bottom right") -> Image.Image:
    """One still: the look's scene with the (cut-out) product standing in it and the logo at `spot`.

    Everything soft (wall, floor, light, shadow, vignette) is drawn at a quarter of the size and
    scaled up once; the product, its reflection and the logo are pasted at full size.
    """
    w, h = size
    factor = 4
    small = _backdrop(look, (max(8, w // factor), max(8, h // factor)))
    placed = _place(product, size) if product is not None else None
    if placed:
        _shadow(small, *placed, look, factor)
    if look.vignette > 0:
        small = ImageChops.multiply(small, vignette(small.size, look.vignette))
    canvas = small.resize(size, Image.Resampling.BICUBIC)
    box = None
    if placed:
        scaled, x, y = placed
        _reflection(canvas, scaled, x, y)
        canvas.paste(scaled, (x, y), scaled)
        box = (x, y, scaled.width, scaled.height)
    if logo is not None and spot:
        _logo(canvas, logo, spot, box)
    canvas = grade(canvas, look.warmth)
    if look.grain:
        noise = Image.effect_noise((max(1, w // 2), max(1, h // 2)), 40).resize(size).convert("RGB")
        canvas = Image.blend(canvas, ImageChops.overlay(canvas, noise), min(0.4, 0.1 * look.grain))
    return canvas
