"""HTTP and SSE helpers of the gateway tests (real servers, no mocks)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import orjson
from PIL import Image

from libs.settings import Settings
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


def user_token(settings: Settings, user_id: str, email: str | None = None, *, verified: bool = True,
               exp_in: int = 600, secret: str | None = None) -> str:
    """A Supabase-style access token (HS256 with the project secret unless `secret` forges one)."""
    key = secret or (settings.supabase_jwt_secret.get_secret_value() if settings.supabase_jwt_secret else "")
    claims: dict[str, Any] = {"sub": user_id, "aud": "authenticated", "exp": int(time.time()) + exp_in,
                              "role": "authenticated", "user_metadata": {"email_verified": verified}}
    if email:
        claims["email"] = email
    return jwt.encode(claims, key, algorithm="HS256")


def new_user() -> str:
    """A fresh `pass:user:<uuid>` pass id."""
    return f"pass:user:{uuid.uuid4()}"


def signed_in(settings: Settings, pass_id: str, **token_args: Any) -> dict[str, str]:
    """The headers the frontend sends for a signed-in customer: the Bearer token beside the pass id.

    `pass:user:<uid>` gets a token of that user, `pass:email:<addr>` one with that verified email.
    """
    kind, _, value = pass_id.removeprefix("pass:").partition(":")
    if kind == "user":
        token = user_token(settings, value, **token_args)
    elif kind == "email":
        token = user_token(settings, str(uuid.uuid4()), value, **token_args)
    else:
        raise ValueError(f"no token proves {pass_id} by itself")
    return {"Authorization": f"Bearer {token}", "X-Mina-Pass-Id": pass_id}
