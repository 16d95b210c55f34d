"""The offline video: the still itself, moved as the motion brief says, as a small H.264 MP4.

Moves read from the words (feedback first, then the brief and movement style, then the prompt):
push-in (zoom in, dolly in), pull-out (zoom out, reveal), pan left / right, tilt up / down, orbit
(a drift sideways while closing in), a light sweep (sweep, shimmer, glint, sheen, flare), static,
and slower / faster. Nothing recognised: a slow push-in. "Pan left" is the camera's move: the
frame travels left across the still, so the scene slides to the right on screen.

Frames are cut from the still (a moving crop window, resized) at a small size and encoded
with the ffmpeg binary that imageio-ffmpeg ships.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field

import imageio_ffmpeg
from PIL import Image, ImageChops

VIDEO_LONG_SIDE = 384
FPS = 12

MOVES: list[tuple[str, str]] = [
    (r"push(?:es|ing)?[- ]?in|zoom(?:s|ing)? in|dolly(?:ing)? in|moves? (?:in|closer)|closer|creep(?:s|ing)? in", "in"),
    (r"pull(?:s|ing)?[- ]?(?:out|back)|zoom(?:s|ing)? out|dolly(?:ing)? out|reveal\w*|further|wider", "out"),
    (r"pan(?:s|ning)? (?:to (?:the )?)?left|track(?:s|ing)? left|truck(?:s|ing)? left|slides? left|drift\w* left",
     "left"),
    (r"pan(?:s|ning)? (?:to (?:the )?)?right|track(?:s|ing)? right|truck(?:s|ing)? right|slides? right"
     r"|drift\w* right", "right"),
    (r"tilt(?:s|ing)? up|crane(?:s|ing)? up|rising|rise", "up"),
    (r"tilt(?:s|ing)? down|crane(?:s|ing)? down|descend\w*", "down"),
    (r"orbit\w*|rotat\w*|turntable|circl\w*|arc(?:s|ing)?", "orbit"),
    (r"light sweep|sweep\w*|shimmer\w*|glint\w*|sheen|flare\w*|glisten\w*|sparkl\w*|shine\w*", "sweep"),
    (r"static|locked[- ]off|still camera|no camera (?:move\w*|motion)|tripod", "static"),
    (r"slow(?:er|ly)?|gentl[ey]r?|subtle|calm(?:er)?", "slower"),
    (r"fast(?:er)?|quick(?:er|ly)?|dynamic|energetic|more movement", "faster"),
]
OPPOSITE = {"in": "out", "out": "in", "left": "right", "right": "left", "up": "down", "down": "up"}


@dataclass
class Motion:
    """What the camera does over the clip (zoom factors and pan offsets are at the start / the end)."""

    zoom: tuple[float, float] = (1.0, 1.0)
    pan: tuple[float, float] = (0.0, 0.0)  # horizontal centre of the window, -1 (left) .. 1 (right)
    tilt: tuple[float, float] = (0.0, 0.0)  # vertical centre of the window, -1 (top) .. 1 (bottom)
    sweep: bool = False
    moves: list[str] = field(default_factory=list)


def _moves_in(text: str) -> list[str]:
    found: list[str] = []
    text = " " + (text or "").lower() + " "
    for pattern, move in MOVES:
        for match in re.finditer(rf"\b(?:{pattern})\b", text):
            before = text[max(0, match.start() - 20):match.start()]
            if re.search(r"\b(?:no|not|without|less|never)\s+(?:\w+\s+)?$", before) and move not in ("static",):
                continue
            if move not in found:
                found.append(move)
    return found


def parse_motion(feedback: str | None = None, brief: str | None = None, previous: str | None = None) -> Motion:
    """The camera move: the feedback's words win over the brief's, which win over the previous move's."""
    base = _moves_in(brief or "") or _moves_in(previous or "")
    change = _moves_in(feedback or "")
    moves = list(base)
    if re.search(r"\b(?:reverse|other way|opposite|backwards?)\b", (feedback or "").lower()):
        moves = [OPPOSITE.get(m, m) for m in moves]
    for move in change:
        if move in OPPOSITE:  # a new direction replaces its opposite
            moves = [m for m in moves if m != OPPOSITE[move]]
        if move == "slower":
            moves = [m for m in moves if m != "faster"]
        if move == "faster":
            moves = [m for m in moves if m != "slower"]
        if move not in moves:
            moves.append(move)
    speed = 0.5 if "slower" in moves else 1.7 if "faster" in moves else 1.0
    motion = Motion(moves=moves)
    camera = [m for m in moves if m not in ("sweep", "slower", "faster")]
    if "static" in camera or (not camera and "sweep" in moves):
        motion.zoom = (1.0, 1.0)
    elif "out" in camera:
        motion.zoom = (1.0 + 0.22 * speed, 1.0)
    elif "in" in camera or not camera:
        motion.zoom = (1.0, 1.0 + 0.22 * speed)
    if "static" not in camera:
        side = 0.8 * speed
        if "left" in camera:
            motion.pan = (side, -side)
        elif "right" in camera or "orbit" in camera:
            motion.pan = (-side, side)
        if "up" in camera:
            motion.tilt = (side, -side)
        elif "down" in camera:
            motion.tilt = (-side, side)
        if "orbit" in camera:
            motion.zoom = (1.2, 1.2 + 0.12 * speed)
        elif motion.zoom == (1.0, 1.0) and (motion.pan != (0.0, 0.0) or motion.tilt != (0.0, 0.0)):
            motion.zoom = (1.25, 1.25)  # a pan needs room to travel
    motion.sweep = "sweep" in moves
    return motion


def video_size(still: tuple[int, int]) -> tuple[int, int]:
    w, h = still
    scale = VIDEO_LONG_SIDE / max(w, h)
    return max(16, round(w * scale / 2) * 2), max(16, round(h * scale / 2) * 2)


def _sweep_band(size: tuple[int, int]) -> Image.Image:
    """A soft diagonal band of light in the middle third of a strip three frames wide (a frame crops
    the strip further along each time, so the band crosses it from left to right)."""
    w, h = size
    lut = [round(140 * max(0.0, 1 - abs(v - 128) / 40) ** 2) for v in range(256)]
    band = Image.linear_gradient("L").rotate(90).point(lut).resize((w, h * 2), Image.Resampling.BILINEAR)
    band = band.rotate(-16, resample=Image.Resampling.BILINEAR).crop((0, h // 2, w, h // 2 + h))
    wide = Image.new("L", (w * 3, h), 0)
    wide.paste(band, (w, 0))
    return wide


def frames(still: Image.Image, motion: Motion, count: int) -> Iterator[Image.Image]:
    """`count` frames of the move over the still."""
    source = still.convert("RGB")
    w, h = source.size
    size = video_size(source.size)
    band = _sweep_band(size) if motion.sweep else None
    for i in range(count):
        t = i / max(1, count - 1)
        ease = t * t * (3 - 2 * t)
        factor = motion.zoom[0] + (motion.zoom[1] - motion.zoom[0]) * ease
        cw, ch = w / factor, h / factor
        px = motion.pan[0] + (motion.pan[1] - motion.pan[0]) * ease
        py = motion.tilt[0] + (motion.tilt[1] - motion.tilt[0]) * ease
        left = (w - cw) / 2 * (1 + px)
        top = (h - ch) / 2 * (1 + py)
        frame = source.resize(size, Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
        if band is not None:
            offset = round((2 * t) * size[0])  # the band enters from the left and leaves on the right
            light = band.crop((2 * size[0] - offset, 0, 3 * size[0] - offset, size[1]))
            frame = ImageChops.screen(frame, Image.merge("RGB", (light, light, light)))
        yield frame


def encode(images: Iterator[Image.Image], size: tuple[int, int], fps: int = FPS) -> bytes:
    """H.264 in MP4 (yuv420p, so every browser plays it)."""
    handle, path = tempfile.mkstemp(suffix=".mp4")
    os.close(handle)
    try:
        writer = imageio_ffmpeg.write_frames(path, size, fps=fps, codec="libx264", pix_fmt_out="yuv420p",
                                             macro_block_size=2, quality=6, ffmpeg_log_level="error")
        writer.send(None)
        for image in images:
            writer.send(image.tobytes())
        writer.close()
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


def render_motion(still: bytes, motion: Motion, seconds: float) -> bytes:
    image = Image.open(io.BytesIO(still))
    image.draft("RGB", (VIDEO_LONG_SIDE * 2, VIDEO_LONG_SIDE * 2))
    count = max(2, round(seconds * FPS))
    return encode(frames(image, motion, count), video_size(image.size))
