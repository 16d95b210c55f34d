"""Uploads keep the event loop free: each image is decoded once, in a worker thread, never on the loop."""

from __future__ import annotations

import threading

import httpx
import pytest
from PIL import ImageFile

from tests.gateway.support import data_url, png_bytes


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The thread id of every full Pillow decode (Pillow's own `ImageFile.load`, watched, not replaced)."""
    seen: list[int] = []
    load = ImageFile.ImageFile.load

    def watched(self: ImageFile.ImageFile) -> object:
        seen.append(threading.get_ident())
        return load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", watched)
    return seen


async def test_a_multipart_upload_is_decoded_once_off_the_loop(gateway: str, decodes: list[int]) -> None:
    """`POST /api/upload`: one decode, on another thread than the one running the app's event loop."""
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        answer = await client.post("/api/upload", files={"file": ("p.png", png_bytes((640, 480)), "image/png")},
                                   headers={"X-Mina-Pass-Id": "pass:anon:offloop"})
    assert answer.status_code == 200, answer.text
    assert (answer.json()["width"], answer.json()["height"]) == (640, 480)
    assert len(decodes) == 1 and decodes[0] != threading.get_ident()


async def test_a_data_url_upload_is_decoded_once_off_the_loop(gateway: str, decodes: list[int]) -> None:
    """`POST /api/r2/upload-dataurl`: the same, for a base64 data URL."""
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        answer = await client.post("/api/r2/upload-dataurl", json={"dataUrl": data_url(png_bytes()),
                                                                   "passId": "pass:anon:offloop"})
    assert answer.status_code == 200, answer.text
    assert len(decodes) == 1 and decodes[0] != threading.get_ident()


async def test_a_broken_image_is_still_refused(gateway: str) -> None:
    """Decoding once still reads the whole image: a truncated PNG is a 400 INVALID_IMAGE."""
    truncated = png_bytes((640, 480))[:-200]
    async with httpx.AsyncClient(base_url=gateway, timeout=30) as client:
        answer = await client.post("/api/upload", files={"file": ("p.png", truncated, "image/png")})
    assert answer.status_code == 400 and answer.json()["error"] == "INVALID_IMAGE"
