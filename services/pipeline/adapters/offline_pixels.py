"""The offline fingertips tools' pixels: no network, yet every tool really edits the customer's image.

- eraser: the masked area is rebuilt from its surroundings (OpenCV's Telea inpainting);
- flux_fill: the mask is inpainted, then filled with a soft light in the prompt's colour;
- expand: the canvas grows to the asked ratio, the new margins carry the edges on and melt into blur;
- remove_bg: a plain background (the colour of the borders, connected to them) becomes transparent;
- upscale: 2x (or the scale factor) Lanczos resample, then an unsharp mask;
- vectorize: the image is traced into an SVG with vtracer.

`EDITS` maps each tool's Replicate model to its edit. OpenCV, NumPy and vtracer load only when
the first edit runs (`offline_edits.OfflineEditor` imports this module then), so they cost the
pipeline's cold start nothing.
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import vtracer
from PIL import Image, ImageColor, ImageFilter, UnidentifiedImageError

from libs.errors import ProviderError

MAX_SIDE = 4096  # no offline output larger than this on either side
TRACE_MAX_SIDE = 768  # vectorize traces a copy at most this large (tracing time grows with pixels)
Edit = Callable[[dict[str, Any], dict[str, bytes]], tuple[bytes, str]]


# --------------------------------------------------------------------------- pixels


def open_image(data: bytes, what: str = "image") -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ProviderError(f"the {what} could not be read", code="EDIT_FAILED") from exc
    return image


def png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def mask_array(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """The mask at the image's size, 255 where to edit (white, or opaque when the mask has alpha), else 0."""
    mask = open_image(data, "mask")
    alpha_low = mask.getchannel("A").getextrema()[0] if mask.mode in ("RGBA", "LA") else 255
    see_through = isinstance(alpha_low, int) and alpha_low < 255  # a drawn overlay: its alpha is the mask
    grey = mask.getchannel("A") if see_through else mask.convert("L")
    if grey.size != size:
        grey = grey.resize(size, Image.Resampling.NEAREST)
    return np.where(np.asarray(grey) > 127, 255, 0).astype(np.uint8)


def _bgr(image: Image.Image) -> np.ndarray:
    return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)


def _rgb(bgr: np.ndarray) -> Image.Image:
    return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _settled(weight: np.ndarray) -> np.ndarray:
    """A blurred mask's weights with the faint tail cut: pixels away from the mask keep their exact values."""
    return np.where(weight < 1 / 128, 0.0, weight)


def inpaint(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """The masked area rebuilt from the pixels around it (the mask grown a little to swallow its edge)."""
    if not mask.any():
        return image.convert("RGB")
    radius = max(3, round(min(image.size) / 100))
    grown = cv2.dilate(mask, np.ones((3, 3), np.uint8), iterations=2)
    filled = cv2.inpaint(_bgr(image), grown, radius, cv2.INPAINT_TELEA).astype(np.float64)
    # Telea leaves streaks converging on the middle of a large hole: soften them inside the hole only
    softened = cv2.GaussianBlur(filled, (0, 0), sigmaX=radius * 2.0)
    inside = _settled(cv2.GaussianBlur(grown.astype(np.float64) / 255.0, (0, 0), sigmaX=radius))[..., None] * 0.8
    return _rgb(np.clip(filled * (1 - inside) + softened * inside, 0, 255).astype(np.uint8))


def erase(image: Image.Image, mask: np.ndarray) -> Image.Image:
    return inpaint(image, mask)


def prompt_colour(prompt: str) -> tuple[int, int, int]:
    """The first colour the prompt names (any CSS colour word), else one derived from the prompt's hash."""
    for word in prompt.lower().replace(",", " ").split():
        try:
            rgb = ImageColor.getrgb(word.strip(".!?;:"))
        except ValueError:
            continue
        return rgb[0], rgb[1], rgb[2]
    digest = hashlib.sha256(prompt.encode()).digest()
    return 80 + digest[0] % 150, 80 + digest[1] % 150, 80 + digest[2] % 150


def fill(image: Image.Image, mask: np.ndarray, prompt: str) -> Image.Image:
    """Inpaint, then light the area in the prompt's colour: a radial glow, feathered into the scene."""
    base = inpaint(image, mask)
    if not mask.any():
        return base
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    radius = max(float(np.hypot(ys - cy, xs - cx).max()), 1.0)
    yy, xx = np.mgrid[0 : mask.shape[0], 0 : mask.shape[1]]
    glow = np.clip(1.0 - np.hypot(yy - cy, xx - cx) / (radius * 1.15), 0.0, 1.0)
    feather = _settled(np.asarray(Image.fromarray(mask).filter(ImageFilter.GaussianBlur(max(2, radius / 12)))) / 255.0)
    weight = (0.35 + 0.5 * glow) * feather
    colour = np.array(prompt_colour(prompt), dtype=np.float64)
    pixels = np.asarray(base, dtype=np.float64)
    mixed = pixels * (1 - weight[..., None]) + colour * weight[..., None]
    return Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8))


def ratio_of(value: Any) -> float | None:
    """`16:9` or `[w, h]` as width / height; None for anything else."""
    if isinstance(value, str) and ":" in value:
        left, _, right = value.partition(":")
        try:
            w, h = float(left), float(right)
        except ValueError:
            return None
        return w / h if w > 0 and h > 0 else None
    if isinstance(value, list | tuple) and len(value) == 2:
        try:
            w, h = float(value[0]), float(value[1])
        except (TypeError, ValueError):
            return None
        return w / h if w > 0 and h > 0 else None
    return None


def expand(image: Image.Image, ratio: float) -> Image.Image:
    """The smallest canvas of `ratio` that holds the image, centred; the margins carry its edges on, blurring
    outwards (stretched edge pixels, not a mirror: a mirror would copy the subject into the margin)."""
    width, height = image.size
    if width / height < ratio:
        new_w, new_h = round(height * ratio), height
    else:
        new_w, new_h = width, round(width / ratio)
    scale = min(1.0, MAX_SIDE / max(new_w, new_h))
    if scale < 1.0:
        image = image.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.Resampling.LANCZOS)
        width, height = image.size
        new_w, new_h = round(new_w * scale), round(new_h * scale)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    right, bottom = new_w - width - left, new_h - height - top
    if not (left or top or right or bottom):
        return image.convert("RGB")
    source = _bgr(image)
    carried = cv2.copyMakeBorder(source, top, bottom, left, right, cv2.BORDER_REPLICATE)
    blurred = cv2.GaussianBlur(carried, (0, 0), sigmaX=max(2.0, max(left, top, right, bottom) / 6))
    yy, xx = np.mgrid[0:new_h, 0:new_w]
    outside = np.maximum.reduce([left - xx, xx - (left + width - 1), top - yy, yy - (top + height - 1),
                                 np.zeros_like(xx)])
    span = max(left, top, right, bottom, 1)
    weight = np.clip(outside / (span * 0.6), 0.0, 1.0)[..., None]
    out = carried * (1 - weight) + blurred * weight
    out[top : top + height, left : left + width] = source  # the original pixels, untouched
    return _rgb(np.clip(out, 0, 255).astype(np.uint8))


def remove_background(image: Image.Image) -> Image.Image:
    """Transparent where the background is: pixels close to the border colour AND connected to the border."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.int32)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    distance = np.sqrt(((rgb - background) ** 2).sum(axis=2))
    spread = float(np.percentile(np.sqrt(((border - background) ** 2).sum(axis=1)), 90))
    close = (distance <= max(24.0, spread * 1.5)).astype(np.uint8)
    _count, labels = cv2.connectedComponents(close, connectivity=4)
    edge_labels = set(np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])).tolist())
    is_background = np.isin(labels, [label for label in edge_labels if label != 0])  # 0: the pixels not close
    alpha = np.where(is_background, 0, 255).astype(np.uint8)
    alpha = np.asarray(Image.fromarray(alpha).filter(ImageFilter.GaussianBlur(1)))
    out = image.convert("RGBA")
    out.putalpha(Image.fromarray(alpha))
    return out


def upscale(image: Image.Image, factor: float) -> Image.Image:
    factor = max(1.0, min(float(factor), 4.0))
    width, height = image.size
    scale = min(factor, MAX_SIDE / max(width, height)) if max(width, height) * factor > MAX_SIDE else factor
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    has_alpha = image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info)
    mode = "RGBA" if has_alpha else "RGB"
    resized = image.convert(mode).resize(size, Image.Resampling.LANCZOS)
    return resized.filter(ImageFilter.UnsharpMask(radius=2, percent=120, threshold=2))


def vectorize(image: Image.Image) -> bytes:
    """An SVG traced from the image (a copy at most TRACE_MAX_SIDE on its longer side)."""
    copy = image.convert("RGBA")
    copy.thumbnail((TRACE_MAX_SIDE, TRACE_MAX_SIDE))
    svg = vtracer.convert_raw_image_to_svg(png(copy), img_format="png", colormode="color", mode="spline",
                                           filter_speckle=4, color_precision=6, layer_difference=16)
    return str(svg).encode()


# --------------------------------------------------------------------------- tools by Replicate model


def _erase(inputs: dict[str, Any], files: dict[str, bytes]) -> tuple[bytes, str]:
    image = open_image(files["image"])
    return png(erase(image, mask_array(files["mask"], image.size))), "image/png"


def _fill(inputs: dict[str, Any], files: dict[str, bytes]) -> tuple[bytes, str]:
    image = open_image(files["image"])
    if "mask" not in files:
        raise ProviderError("a fill needs a mask of the area to fill", code="EDIT_FAILED")
    return png(fill(image, mask_array(files["mask"], image.size), str(inputs.get("prompt") or ""))), "image/png"


def _expand(inputs: dict[str, Any], files: dict[str, bytes]) -> tuple[bytes, str]:
    ratio = ratio_of(inputs.get("canvas_size")) or ratio_of(inputs.get("aspect_ratio"))
    if ratio is None or not 0.1 <= ratio <= 10:
        raise ProviderError("an expand needs a target aspect ratio or canvas size", code="EDIT_FAILED")
    return png(expand(open_image(files["image"]), ratio)), "image/png"


def _remove_bg(inputs: dict[str, Any], files: dict[str, bytes]) -> tuple[bytes, str]:
    return png(remove_background(open_image(files["image"]))), "image/png"


def _upscale(inputs: dict[str, Any], files: dict[str, bytes]) -> tuple[bytes, str]:
    factor = inputs.get("scale_factor") or 2
    return png(upscale(open_image(files["image"]), float(factor))), "image/png"


def _vectorize(inputs: dict[str, Any], files: dict[str, bytes]) -> tuple[bytes, str]:
    return vectorize(open_image(files["image"])), "image/svg+xml"


# Replicate model (owner/name, the version left out) -> the offline edit and the inputs holding its files
EDITS: dict[str, tuple[Edit, dict[str, tuple[str, ...]]]] = {
    "bria/eraser": (_erase, {"image": ("image",), "mask": ("mask_url", "mask_image")}),
    "bria/genfill": (_fill, {"image": ("image",), "mask": ("mask",)}),
    "bria/expand-image": (_expand, {"image": ("image",)}),
    "men1scus/birefnet": (_remove_bg, {"image": ("image",)}),
    "fermatresearch/magic-image-refiner": (_upscale, {"image": ("image",)}),
    "philz1337x/crystal-upscaler": (_upscale, {"image": ("image",)}),
    "recraft-ai/recraft-vectorize": (_vectorize, {"image": ("image",)}),
}
