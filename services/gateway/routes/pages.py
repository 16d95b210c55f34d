"""The studio and ops console pages and their static files, shipped with the gateway (no CDN, works offline).

The pages are plain HTML; everything they show comes from the gateway's JSON routes, the
studio through the public routes only, the ops console through the admin-token ones.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

from libs.errors import NotFoundError

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# Only these files are served: a fixed list, so no request path ever reaches the file system.
ASSETS = {
    "mina.css": "text/css; charset=utf-8",
    "studio.js": "text/javascript; charset=utf-8",
    "studio-tools.js": "text/javascript; charset=utf-8",
    "ops.js": "text/javascript; charset=utf-8",
}

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src * data: blob:; media-src * blob:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")

HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP,
           "Referrer-Policy": "no-referrer"}

router = APIRouter(tags=["pages"])


def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html; charset=utf-8", headers=HEADERS)


@router.get("/studio", response_class=FileResponse, include_in_schema=False)
async def studio() -> FileResponse:
    """The studio: pass id, uploads, create, live scan lines, tweak, animate, like, download, the fingertips
    tools (Expand, Draw, Erase with a drawn mask) and buying matcha."""
    return _page("studio.html")


@router.get("/ops", response_class=FileResponse, include_in_schema=False)
async def ops() -> FileResponse:
    """The ops console; it asks for the admin token and sends it with every API call."""
    return _page("ops.html")


@router.get("/ui/{name}", response_class=FileResponse, include_in_schema=False)
async def static_file(name: str) -> FileResponse:
    media = ASSETS.get(name)
    if media is None:
        raise NotFoundError("Not found.", code="NOT_FOUND")
    return FileResponse(STATIC_DIR / name, media_type=media, headers=HEADERS)
