"""HTTP and SSE helpers of the gateway tests (real servers, no mocks)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
from PIL import Image

from tests.conftest import ADMIN_TOKEN

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class SseEvent:
    event: str
    data: dict[str, Any]
    id: str | None


@dataclass
class SseRead:
    events: list[SseEvent] = field(default_factory=list)
    comments: int = 0
    closed: bool = False

    def named(self, name: str) -> list[SseEvent]:
        return [e for e in self.events if e.event == name]


async def read_sse(client: httpx.AsyncClient, url: str, headers: dict[str, str] | None = None,
                   timeout: float = 60.0, stop_after: int | None = None, into: SseRead | None = None) -> SseRead:
    """Read an SSE response until the server closes it (or `stop_after` events), with a deadline."""
    out = into or SseRead()

    async def run() -> None:
        async with client.stream("GET", url, headers=headers, timeout=timeout) as response:
            assert response.status_code == 200, response.status_code
            assert response.headers["content-type"].startswith("text/event-stream")
            event, data, ident = "message", "", None
            async for line in response.aiter_lines():
                if line.startswith(":"):
                    out.comments += 1
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
                elif line.startswith("id:"):
                    ident = line[3:].strip()
                elif line == "" and data:
                    out.events.append(SseEvent(event, orjson.loads(data), ident))
                    event, data, ident = "message", "", None
                    if stop_after is not None and len(out.events) >= stop_after:
                        return
            out.closed = True

    await asyncio.wait_for(run(), timeout)
    return out


def png_bytes(size: tuple[int, int] = (64, 48), color: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def data_url(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def shopify_sign(body: bytes, secret: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
