"""What an uploaded file really is: the type from its first bytes, and one full Pillow decode, off the loop."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import re
from dataclasses import dataclass

from libs.errors import InvalidInputError

_DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<params>(;[^,;]*)*?);base64,(?P<data>.*)$", re.S)
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
VIDEO_TYPES = ("video/mp4", "video/quicktime", "video/webm")


def sniff(data: bytes) -> str | None:
    """The media type of `data` from its magic bytes (None when it is none we store)."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data[4:8] == b"ftyp":
        return "video/quicktime" if data[8:10] == b"qt" else "video/mp4"
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "video/webm"
    return None


def verify_image(data: bytes) -> tuple[int, int]:
    """(width, height) of a fully decodable image, decoded ONCE; InvalidInputError INVALID_IMAGE otherwise.

    CPU-bound: call it through `inspect_media` (a worker thread), never on the event loop.
    Pillow is imported on the first upload, not when the gateway starts.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return int(image.width), int(image.height)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInputError("The file is not a readable image.", code="INVALID_IMAGE") from exc


@dataclass(frozen=True)
class Media:
    content_type: str
    width: int | None = None  # images only
    height: int | None = None


def media_of(data: bytes) -> Media:
    """The sniffed type of an upload we accept; an image is decoded in full (once) for its size."""
    kind = sniff(data)
    if kind is None:
        raise InvalidInputError("Only JPEG, PNG, GIF, WebP images and MP4/MOV/WebM videos can be uploaded.",
                                code="UNSUPPORTED_TYPE")
    if kind in IMAGE_TYPES:
        return Media(kind, *verify_image(data))
    return Media(kind)


async def inspect_media(data: bytes) -> Media:
    """`media_of` in a worker thread: a 15 MB image takes the CPU for a while, the event loop must not wait."""
    return await asyncio.to_thread(media_of, data)


async def decode_upload(value: str) -> tuple[bytes, str | None]:
    """`decode_data_url` in a worker thread (base64 of up to `max_body_bytes`)."""
    return await asyncio.to_thread(decode_data_url, value)


def decode_data_url(value: str) -> tuple[bytes, str | None]:
    """(bytes, declared type) of a `data:...;base64,...` URL."""
    match = _DATA_URL.match(value.strip())
    if match is None:
        raise InvalidInputError("dataUrl must be a base64 data URL.", code="INVALID_DATAURL")
    try:
        data = base64.b64decode(match.group("data"), validate=False)
    except (binascii.Error, ValueError) as exc:
        raise InvalidInputError("dataUrl is not valid base64.", code="INVALID_DATAURL") from exc
    if not data:
        raise InvalidInputError("dataUrl is empty.", code="INVALID_DATAURL")
    return data, match.group("mime")
