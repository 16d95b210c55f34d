"""What the offline still is made of: the customer's images read, the product cut out, the scene's look.

Pillow only (C loops), so this costs milliseconds:
- `cut_out` removes a plain background (the colour of the image's border, flooded in from the
  edges, so a white label inside a white-backed bottle stays) or keeps a transparent PNG's alpha;
  a photo without a plain background stays whole, in a soft rounded frame;
- `look_of` reads the scene from the inspirations (their top and bottom colours, their brightest
  tone as the light, the first one's texture for the backdrop, the second's for the floor), or,
  with none, from a colour the brief names or the product's own hue; then the brief and the style
  preset move it (dark, light, warm, cool, vivid, soft, backlit, vintage).
"""

from __future__ import annotations

import colorsys
import io
import re
from dataclasses import dataclass, replace

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageOps, ImageStat, UnidentifiedImageError

from libs.errors import ProviderError

RGB = tuple[int, int, int]
MAX_SOURCE = 1024  # references are read at most this large: the canvas never needs more

NAMED: dict[str, RGB] = {
    "black": (20, 20, 22), "white": (238, 236, 232), "grey": (128, 128, 128), "gray": (128, 128, 128),
    "red": (196, 42, 42), "orange": (228, 128, 44), "yellow": (232, 204, 70), "green": (66, 150, 86),
    "teal": (40, 146, 146), "blue": (52, 92, 196), "navy": (28, 40, 90), "purple": (126, 62, 168),
    "pink": (228, 140, 172), "brown": (118, 80, 52), "beige": (220, 200, 170), "gold": (212, 172, 60),
    "cream": (242, 232, 208), "terracotta": (196, 104, 74), "sage": (150, 170, 140), "lilac": (196, 170, 220),
}

# words of a brief or a preset -> what they do to the scene
MOODS: list[tuple[str, dict[str, float]]] = [
    (r"dark|moody|noir|night|dramatic|luxur\w*|black|shadowy|low[- ]key",
     {"value": -0.6, "glow": 0.35, "vignette": 0.5}),
    (r"minimal\w*|clean|airy|bright|white|studio|scandi\w*|high[- ]key", {"value": 0.35, "vignette": -0.08}),
    (r"warm|golden|sunset|sunlit|amber|autumn|cos[iy]\w*", {"warmth": 1.0}),
    (r"cool|cold|icy|ice|winter|ocean|fresh|frost\w*", {"warmth": -1.0}),
    (r"neon|vibrant|bold|pop|gradient|colou?rful|saturated", {"saturation": 0.6}),
    (r"pastel|soft|muted|dreamy|calm|gentle", {"saturation": -0.4, "value": 0.12}),
    (r"back[- ]?lit|back[- ]?light\w*|rim|halo|glow\w*", {"glow": 0.55}),
    (r"vintage|retro|film|analog\w*|nostalg\w*", {"warmth": 0.6, "saturation": -0.25, "grain": 1.0}),
]


@dataclass(frozen=True)
class Look:
    """The scene a product is placed in."""

    top: RGB
    bottom: RGB
    floor: RGB
    light: RGB
    glow: float = 0.35  # strength of the light behind the product
    vignette: float = 0.22
    warmth: float = 0.0  # final grade: + warm, - cool
    saturation: float = 0.0
    grain: float = 0.0
    texture: Image.Image | None = None  # the first inspiration, softened into the backdrop
    floor_texture: Image.Image | None = None


def mix(a: RGB, b: RGB, t: float) -> RGB:
    t = min(1.0, max(0.0, t))
    return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t), round(a[2] + (b[2] - a[2]) * t))


def luminance(c: RGB) -> float:
    return (0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]) / 255


def _resaturate(c: RGB, amount: float) -> RGB:
    h, s, v = colorsys.rgb_to_hsv(*(x / 255 for x in c))
    r, g, b = colorsys.hsv_to_rgb(h, min(1.0, max(0.0, s * (1 + amount))), v)
    return (round(r * 255), round(g * 255), round(b * 255))


def read_image(data: bytes, what: str) -> Image.Image:
    """An uploaded image, decoded at most MAX_SOURCE on its long side (JPEGs decode already reduced)."""
    try:
        source = Image.open(io.BytesIO(data))
        source.draft("RGB", (MAX_SOURCE, MAX_SOURCE))
        image = ImageOps.exif_transpose(source)
        image.thumbnail((MAX_SOURCE, MAX_SOURCE))
        return image.convert("RGBA")
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ProviderError(f"the {what} image could not be read", code="PREDICTION_FAILED") from exc


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, format="PNG", compress_level=3)
    return out.getvalue()


# ---------------------------------------------------------------- cut-out


def pixels(image: Image.Image) -> list[RGB]:
    """The RGB values of an image, row by row."""
    return [(int(p[0]), int(p[1]), int(p[2])) for p in image.convert("RGB").get_flattened_data()
            if isinstance(p, tuple)]


def _border(image: Image.Image) -> list[RGB]:
    w, h = image.size
    found: list[RGB] = []
    for box in ((0, 0, w, 1), (0, h - 1, w, h), (0, 0, 1, h), (w - 1, 0, w, h)):
        found += pixels(image.crop(box))
    return found


def _distance(image: Image.Image, colour: RGB) -> Image.Image:
    """Per pixel, the largest channel difference from `colour` (L)."""
    r, g, b = ImageChops.difference(image, Image.new("RGB", image.size, colour)).split()
    return ImageChops.lighter(ImageChops.lighter(r, g), b)


def _flood(like: Image.Image) -> Image.Image:
    """The part of `like` (255 = background-coloured) connected to the image's edges."""
    seed = Image.new("L", like.size, 0)
    ImageDraw.Draw(seed).rectangle([0, 0, like.width - 1, like.height - 1], outline=255)
    reach = ImageChops.darker(seed, like)
    spread, binary = ImageFilter.BoxBlur(1), [0] + [255] * 255
    for _ in range(like.width + like.height):
        grown = reach
        for _step in range(4):
            grown = ImageChops.darker(grown.filter(spread).point(binary), like)
        if ImageChops.difference(grown, reach).getbbox() is None:
            break
        reach = grown
    return reach


def cut_out(image: Image.Image, tolerance: int = 30) -> Image.Image:
    """The subject on transparency, cropped to it; an image without a plain background stays whole.

    The background is the median colour of the border. Which pixels are background is decided on a
    small copy (flooded in from the edges), then the edge band is matted again at full size from
    each pixel's distance to that colour, so the outline is crisp and carries no halo.
    """
    image = image.convert("RGBA")
    alpha = image.getchannel("A")
    if alpha.point(lambda v: 255 if v < 250 else 0).getbbox():  # already cut out
        box = alpha.point(lambda v: 255 if v > 8 else 0).getbbox()
        return image.crop(box) if box else image
    rgb = image.convert("RGB")
    small = rgb.resize(_within(rgb.size, 128), Image.Resampling.BILINEAR)
    border = _border(small)
    background: RGB = (sorted(p[0] for p in border)[len(border) // 2], sorted(p[1] for p in border)[len(border) // 2],
                       sorted(p[2] for p in border)[len(border) // 2])
    close = [p for p in border if max(abs(p[i] - background[i]) for i in range(3)) <= tolerance]
    if len(close) < 0.6 * len(border):  # a photo, not a packshot: keep it whole, softly framed
        return _framed(image)
    like = _distance(small, background).point(lambda v: 255 if v <= tolerance else 0)
    subject = ImageOps.invert(_flood(like))
    if subject.getbbox() is None:
        return _framed(image)
    inside = subject.filter(ImageFilter.MinFilter(3)).resize(image.size, Image.Resampling.BILINEAR)
    near = subject.filter(ImageFilter.MaxFilter(5)).resize(image.size, Image.Resampling.BILINEAR)
    matte = _distance(rgb, background).point(lambda v: max(0, min(255, (v - tolerance // 2) * 255 // tolerance)))
    mask = ImageChops.lighter(inside.point(lambda v: 255 if v > 200 else 0),
                              ImageChops.darker(near.point(lambda v: 255 if v > 16 else 0), matte))
    image.putalpha(mask)
    box = mask.point(lambda v: 255 if v > 8 else 0).getbbox()
    return image.crop(box) if box else image


def _within(size: tuple[int, int], longest: int) -> tuple[int, int]:
    scale = min(1.0, longest / max(size))
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _framed(image: Image.Image) -> Image.Image:
    mask = Image.new("L", image.size, 0)
    radius = min(image.size) // 12
    ImageDraw.Draw(mask).rounded_rectangle([0, 0, image.width - 1, image.height - 1], radius=radius, fill=255)
    image = image.copy()
    image.putalpha(mask)
    return image


# ---------------------------------------------------------------- the look


def _mean(image: Image.Image) -> RGB:
    m = ImageStat.Stat(image).mean
    return (round(m[0]), round(m[1]), round(m[2]))


def dominant(image: Image.Image, count: int = 4) -> list[RGB]:
    """The main colours of an image (opaque pixels only), most frequent first."""
    small = image.convert("RGBA")
    small.thumbnail((48, 48))
    flat = Image.new("RGB", small.size, (0, 0, 0))
    flat.paste(small, mask=small.getchannel("A"))
    quantised = flat.quantize(colors=count + 1)
    palette = quantised.getpalette() or []
    opaque = small.getchannel("A").point(lambda v: 255 if v > 128 else 0)
    counts = quantised.histogram(mask=opaque)
    ordered = sorted((i for i in range(min(256, len(palette) // 3)) if counts[i]), key=lambda i: -counts[i])
    return [(palette[i * 3], palette[i * 3 + 1], palette[i * 3 + 2]) for i in ordered[:count]]


def _from_inspirations(inspirations: list[Image.Image]) -> Look:
    tops, bottoms, lights = [], [], []
    for image in inspirations:
        small = image.convert("RGB").resize((24, 24), Image.Resampling.BILINEAR)
        tops.append(_mean(small.crop((0, 0, 24, 9))))
        bottoms.append(_mean(small.crop((0, 15, 24, 24))))
        lights.append(max(dominant(image) or [tops[-1]], key=luminance))
    top, bottom = tops[0], bottoms[0]
    for extra_top, extra_bottom in zip(tops[1:], bottoms[1:], strict=True):  # the first leads, the rest tint
        top, bottom = mix(top, extra_top, 0.25), mix(bottom, extra_bottom, 0.25)
    light = mix(max(lights, key=luminance), (255, 250, 240), 0.35)
    floor = _mean(inspirations[1].convert("RGB").resize((16, 16))) if len(inspirations) > 1 else mix(
        bottom, (0, 0, 0), 0.12)
    return Look(top=top, bottom=bottom, floor=floor, light=light, texture=inspirations[0].convert("RGB"),
                floor_texture=inspirations[1].convert("RGB") if len(inspirations) > 1 else None)


def _from_words(words: str, product: Image.Image | None) -> Look:
    """No inspiration: a named colour of the brief, else a soft tint of the product's own hue."""
    named = [NAMED[n] for n in NAMED if re.search(rf"\b{n}\b", words)]
    base = named[0] if named else (dominant(product, 1) or [(176, 160, 150)])[0] if product else (176, 160, 150)
    h, s, _v = colorsys.rgb_to_hsv(*(x / 255 for x in base))
    s = min(s, 0.55) if named else min(s, 0.22)

    def tone(value: float, sat: float) -> RGB:
        r, g, b = colorsys.hsv_to_rgb(h, sat, value)
        return (round(r * 255), round(g * 255), round(b * 255))

    return Look(top=tone(0.9, s * 0.8), bottom=tone(0.74, s), floor=tone(0.66, s * 1.1),
                light=(255, 248, 236))


def look_of(inspirations: list[Image.Image], words: str, product: Image.Image | None = None) -> Look:
    """The scene: the inspirations' colours (or the brief's, or the product's), moved by brief and preset."""
    words = words.lower()
    look = _from_inspirations(inspirations) if inspirations else _from_words(words, product)
    if inspirations:
        for name, colour in NAMED.items():  # a colour the brief names tints the references' scene
            if re.search(rf"\b{name}\b", words):
                look = replace(look, top=mix(look.top, colour, 0.25), bottom=mix(look.bottom, colour, 0.25))
                break
    moved: dict[str, float] = {"value": 0.0, "glow": 0.0, "vignette": 0.0, "warmth": 0.0, "saturation": 0.0,
                               "grain": 0.0}
    for pattern, effect in MOODS:
        if re.search(rf"\b(?:{pattern})\b", words):
            for key, amount in effect.items():
                moved[key] += amount
    value = max(-0.85, min(0.6, moved["value"]))
    target = (255, 255, 255) if value > 0 else (0, 0, 0)

    def shift(c: RGB, weight: float = 1.0) -> RGB:
        return _resaturate(mix(c, target, abs(value) * weight), moved["saturation"])

    return replace(look, top=shift(look.top), bottom=shift(look.bottom, 1.05), floor=shift(look.floor, 1.1),
                   glow=max(0.0, look.glow + moved["glow"]), vignette=max(0.0, look.vignette + moved["vignette"]),
                   warmth=moved["warmth"], saturation=moved["saturation"], grain=moved["grain"])
