"""What an uploaded file really is: the type from its first bytes, and a full Pillow decode."""

from __future__ import annotations

import base64
import binascii
import io
import re

from PIL import Image, UnidentifiedImageError

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
    """(width, height) of a fully decodable image; InvalidInputError INVALID_IMAGE otherwise."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            return int(image.width), int(image.height)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise InvalidInputError("The file is not a readable image.", code="INVALID_IMAGE") from exc


def check_media(data: bytes) -> str:
    """The sniffed type of an upload we accept (images are decoded in full)."""
    kind = sniff(data)
    if kind is None:
        raise InvalidInputError("Only JPEG, PNG, GIF, WebP images and MP4/MOV/WebM videos can be uploaded.",
                                code="UNSUPPORTED_TYPE")
    if kind in IMAGE_TYPES:
        verify_image(data)
    return kind


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
