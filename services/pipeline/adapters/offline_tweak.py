"""An offline still tweak: the customer's feedback read as a few intents, applied to the previous still.

Understood (with "a bit"/"slightly" halving and "much"/"a lot"/"way" doubling a step, and
"less"/"not so"/"too" turning a word around: "too dark" = brighter, "less warm" = cooler):
warmer / cooler, closer / further (zoom), brighter / darker, more / less contrast, softer /
sharper, more / less saturated (and black and white), more <colour>, and a new format
(square, portrait, landscape, or W:H). What is not understood changes nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from services.pipeline.adapters.offline_compose import RATIO, grade
from services.pipeline.adapters.offline_look import NAMED, RGB

FOCUS = (0.5, 0.56)  # where a composed still has its product: zooms keep it in frame

# (pattern, intent, direction); `less`/`too` before a match turns it around
WORDS: list[tuple[str, str, float]] = [
    (r"warm(?:er|th)?|golden|cosier|cozier|sunnier", "warmth", 1),
    (r"cool(?:er)?|cold(?:er)?|icier|chillier", "warmth", -1),
    (r"closer|zoom(?:ed)? in|close[- ]?up|bigger|larger|tighter|crop(?:ped)? in|nearer", "zoom", 1),
    (r"further|farther|zoom(?:ed)? out|wider|smaller|more (?:space|room)|pull(?:ed)? back", "zoom", -1),
    (r"dark(?:er|en)?|moodier|dimmer|night", "exposure", -1),
    (r"bright(?:er|en)?|light(?:er|en)|airier|sunny", "exposure", 1),
    (r"contrast(?:y|ier)?|punch(?:y|ier)|dramatic", "contrast", 1),
    (r"flat(?:ter)?|matte", "contrast", -1),
    (r"soft(?:er|en)?|dreamy|dreamier|hazy|hazier|gentler|blurr(?:y|ier)", "softness", 1),
    (r"sharp(?:er|en)?|crisp(?:er)?|clearer", "softness", -1),
    (r"saturated|vivid|vibrant|colou?rful|poppier", "saturation", 1),
    (r"muted|desaturated?|washed[- ]out|duller", "saturation", -1),
    (r"black and white|b&w|monochrome|gr[ae]yscale", "saturation", -4),
]
FLIP = re.compile(r"(?:\bless|\bnot so|\bnot as|\btoo|\bno longer|\breduce|\blower)\s+(?:\w+\s+)?$")
STRONG = re.compile(r"(?:\bmuch|\ba lot|\bway|\bvery|\breally|\bfar|\bsignificantly)\s+(?:\w+\s+)?$")
WEAK = re.compile(r"(?:\ba (?:little )?bit|\bslightly|\ba little|\ba touch|\ba tad|\bsubtly)\s+(?:\w+\s+)?$")
COLOUR_WORDS = {"red": "redder", "blue": "bluer", "green": "greener", "pink": "pinker", "gold": "more gold",
                "yellow": "yellower", "purple": "more purple", "orange": "more orange", "teal": "more teal"}


@dataclass
class Intent:
    """How much each knob moves (0 = untouched); `understood` lists what was read, for the record."""

    warmth: float = 0.0
    zoom: float = 0.0
    exposure: float = 0.0
    contrast: float = 0.0
    softness: float = 0.0
    saturation: float = 0.0
    tint: RGB | None = None
    ratio: float | None = None
    understood: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.understood


def _degree(before: str) -> float:
    return 2.0 if STRONG.search(before) else 0.5 if WEAK.search(before) else 1.0


def parse_feedback(text: str) -> Intent:
    """Read the intents of a feedback text (see the module doc)."""
    text = " " + (text or "").lower().replace("’", "'") + " "
    intent = Intent()
    taken: list[tuple[int, int]] = []
    for pattern, knob, direction in WORDS:
        for match in re.finditer(rf"\b(?:{pattern})\b", text):
            if any(a < match.end() and match.start() < b for a, b in taken):
                continue
            taken.append((match.start(), match.end()))
            before = text[max(0, match.start() - 24):match.start()]
            sign = -1.0 if FLIP.search(before) else 1.0
            amount = direction * sign * _degree(before)
            setattr(intent, knob, getattr(intent, knob) + amount)
            intent.understood.append(f"{knob} {amount:+g}")
    for name, comparative in COLOUR_WORDS.items():
        if re.search(rf"\b(?:{comparative}|more {name})\b", text):
            intent.tint = NAMED[name]
            intent.understood.append(f"tint {name}")
            break
    found = re.search(r"\b(\d+(?:\.\d+)?\s*:\s*\d+(?:\.\d+)?)\b", text)
    ratio_match = RATIO.match(found.group(1)) if found else None
    if ratio_match and float(ratio_match.group(2)) > 0:
        intent.ratio = float(ratio_match.group(1)) / float(ratio_match.group(2))
    elif re.search(r"\bsquare\b", text):
        intent.ratio = 1.0
    elif re.search(r"\b(portrait|vertical|upright|story|stories)\b", text):
        intent.ratio = 9 / 16
    elif re.search(r"\b(landscape|horizontal|widescreen|banner)\b", text):
        intent.ratio = 16 / 9
    if intent.ratio:
        intent.understood.append(f"ratio {intent.ratio:.3g}")
    return intent


def zoom(image: Image.Image, amount: float, focus: tuple[float, float] = FOCUS) -> Image.Image:
    """Closer (> 0): crop around the focus and scale back up. Further (< 0): the still, smaller, in a
    widened copy of itself (blurred), so the frame keeps its size and the product shrinks."""
    w, h = image.size
    factor = 1.25 ** amount
    if factor >= 1:
        cw, ch = w / factor, h / factor
        left = min(max(0.0, focus[0] * w - cw / 2), w - cw)
        top = min(max(0.0, focus[1] * h - ch / 2), h - ch)
        return image.resize((w, h), Image.Resampling.LANCZOS, box=(left, top, left + cw, top + ch))
    inner = image.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.Resampling.LANCZOS)
    return _on_fill(inner, (w, h), focus)


def _on_fill(inner: Image.Image, size: tuple[int, int], focus: tuple[float, float] = (0.5, 0.5)) -> Image.Image:
    """`inner` placed at `focus` on a blurred, stretched copy of itself, its seam feathered."""
    w, h = size
    fill = inner.resize((max(8, w // 8), max(8, h // 8))).filter(ImageFilter.GaussianBlur(3))
    canvas = fill.resize(size, Image.Resampling.BICUBIC)
    feather = max(2, min(inner.size) // 24)
    mask = Image.new("L", (inner.width - 2 * feather, inner.height - 2 * feather), 255)
    mask = ImageOps.expand(mask, feather, 0).filter(ImageFilter.GaussianBlur(feather / 2))
    x = round(focus[0] * w - inner.width / 2)
    y = round(focus[1] * h - inner.height * focus[1])
    canvas.paste(inner, (min(max(0, x), w - inner.width), min(max(0, y), h - inner.height)), mask)
    return canvas


def reframe(image: Image.Image, ratio: float) -> Image.Image:
    """The same long side at a new ratio: the still, whole, on a widened fill of itself."""
    w, h = image.size
    long_side = max(w, h)
    size = (long_side, round(long_side / ratio)) if ratio >= 1 else (round(long_side * ratio), long_side)
    size = (max(16, size[0] // 2 * 2), max(16, size[1] // 2 * 2))
    scale = min(size[0] / w, size[1] / h)
    inner = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    return _on_fill(inner, size)


def apply(image: Image.Image, intent: Intent) -> Image.Image:
    """The previous still with the intents applied: framing first, then light, then colour, then focus."""
    image = image.convert("RGB")
    if intent.ratio and abs(intent.ratio - image.width / image.height) > 0.02:
        image = reframe(image, intent.ratio)
    if intent.zoom:
        image = zoom(image, intent.zoom)
    if intent.exposure:
        image = ImageEnhance.Brightness(image).enhance(max(0.25, 1 + 0.2 * intent.exposure))
    if intent.contrast:
        image = ImageEnhance.Contrast(image).enhance(max(0.3, 1 + 0.25 * intent.contrast))
    if intent.warmth:
        image = grade(image, intent.warmth)
    if intent.saturation:
        image = ImageEnhance.Color(image).enhance(max(0.0, 1 + 0.3 * intent.saturation))
    if intent.tint:
        image = Image.blend(image, Image.new("RGB", image.size, intent.tint), 0.12)
    if intent.softness > 0:
        blurred = image.filter(ImageFilter.GaussianBlur(max(image.size) * 0.003 * intent.softness))
        image = ImageEnhance.Contrast(Image.blend(image, blurred, 0.6)).enhance(0.93)
    elif intent.softness < 0:
        image = ImageEnhance.Sharpness(image).enhance(1 + 0.8 * -intent.softness)
    return image
