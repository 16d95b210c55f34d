"""A local web host for fetch tests: real PNGs, redirects anywhere, a large file.

Routes: `image` (GET /img/<name>.png, a PNG), `redirect` (GET /redirect?to=<url>, a 302 to
that URL; /loop redirects to itself), `big` (GET /big, `big_bytes` of zeros).
"""

from __future__ import annotations

import io
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit

from PIL import Image

from tests.wire.base import Response, WireServer


def png(colour: tuple[int, int, int] = (30, 90, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), colour).save(buf, format="PNG")
    return buf.getvalue()


class ImageServer(WireServer):
    def __init__(self, big_bytes: int = 2 * 1024 * 1024) -> None:
        super().__init__()
        self.big_bytes = big_bytes
        self._request = threading.local()  # the query of the request this handler thread serves

    def redirect_to(self, target: str) -> str:
        return f"{self.url}/redirect?to={target}"

    def route(self, method: str, path: str) -> str | None:
        if method != "GET":
            return None
        if path.startswith("/img/"):
            return "image"
        return {"/redirect": "redirect", "/loop": "loop", "/big": "big"}.get(path)

    def _dispatch(self, method: str, path: str, raw: bytes) -> Response:
        self._request.query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
        return super()._dispatch(method, path, raw)

    def handle(self, route: str, method: str, path: str, body: Any) -> Response:
        if route == "redirect":
            return 302, {"Location": self._request.query.get("to", "/")}, b""
        if route == "loop":
            return 302, {"Location": f"{self.url}/loop"}, b""
        if route == "big":
            return 200, {"Content-Type": "application/octet-stream"}, bytes(self.big_bytes)
        return 200, {"Content-Type": "image/png"}, png()
