"""The create routes' fast path (services/gateway/fastpath.py) answers exactly as the FastAPI path.

Both apps run on one set of deps; every request below but the last is refused (before any publish),
either by the fast path itself or by FastAPI after the fast path handed the request over. Status,
body and the response headers (names, order, values but ids and Retry-After) must be the same.
"""

from __future__ import annotations

import re

import httpx
import pytest

from libs.assets import build_asset_store
from libs.bus import Bus
from libs.settings import Settings
from services.gateway.adapters.idempotency import IdempotencyStore
from services.gateway.app import create_app
from services.gateway.deps import GatewayDeps
from services.gateway.ratelimit import RateLimiter
from tests.gateway.support import user_token

JSON = {"content-type": "application/json"}
STILL, VIDEO = "/mma/still/create", "/mma/video/animate"
UUID = re.compile(rb"[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}")  # request and generation ids
MAX_BODY = 2000


def cases(settings: Settings) -> list[tuple[str, str, bytes, dict[str, str]]]:
    other = {"Authorization": f"Bearer {user_token(settings, 'someone-else')}", **JSON}
    allowed = {"Origin": settings.cors_origins[0], **JSON}
    return [
        ("invalid JSON", STILL, b'{"passId":', JSON),
        ("a JSON array", STILL, b"[1, 2]", JSON),
        ("NUL in a text", STILL, b'{"inputs":{"userBrief":"a\\u0000b"}}', JSON),
        ("a lone surrogate", STILL, b'{"inputs":{"userBrief":"\\ud800"}}', JSON),
        ("an integer past 64 bits", STILL, b'{"inputs":{"n":123456789012345678901234567890}}', JSON),
        ("a field of the wrong type", STILL, b'{"inputs":{"userBrief":["x"]}}', allowed),
        ("an invalid pass id", STILL, b'{"passId":"not a pass id!"}', JSON),
        ("an unproven user id", STILL, b'{"passId":"pass:user:someone"}', allowed),
        ("another customer's id", STILL, b'{"passId":"pass:user:someone"}', other),
        ("a pass id header unproven", STILL, b"{}", {"X-Mina-Pass-Id": "pass:email:a@b.example", **JSON}),
        ("a refused origin", STILL, b'{"passId":"pass:user:someone"}', {"Origin": "https://evil.example", **JSON}),
        ("a query string", STILL + "?passId=pass:user:someone", b"{}", JSON),
        ("a text content type", STILL, b'{"passId":"pass:anon:fp"}', {"content-type": "text/plain"}),
        ("a JSON content type with charset", STILL, b'{"passId":"pass:user:x"}',
         {"content-type": "application/json; charset=utf-8"}),
        ("a body over the cap", STILL, b'{"x":"' + b"y" * MAX_BODY + b'"}', JSON),
        ("an animate without a start image", VIDEO, b'{"passId":"pass:anon:fp-video"}', JSON),
        ("an animate of an unproven customer", VIDEO, b'{"customerId":"pass:user:someone"}', allowed),
        ("a rate-limited customer", STILL, b'{"passId":"pass:anon:fp-limited"}', allowed),
        ("a create (queued: no billing decides here)", STILL, b'{"passId":"pass:anon:fp-ok","inputs":{"brief":"x"}}',
         allowed),
    ]


def answer(response: httpx.Response) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    headers = [(k, b"<s>" if k == b"retry-after" else UUID.sub(b"<id>", v)) for k, v in response.headers.raw]
    return response.status_code, UUID.sub(b"<id>", response.content), headers


@pytest.mark.timeout(120)
async def test_fast_and_fastapi_paths_answer_alike(settings: Settings, bus: Bus) -> None:
    settings = settings.model_copy(update={"max_body_bytes": MAX_BODY, "decision_timeout_s": 0.2})
    deps = GatewayDeps.build(settings, bus, store=build_asset_store(settings),
                             idempotency=await IdempotencyStore.open(bus), limiter=RateLimiter(2))
    for _ in range(2):
        deps.limiter.check("pass:anon:fp-limited")  # its two creates a minute are spent
    for pass_id in ("pass:anon:fp-limited", "pass:anon:fp-video", "pass:anon:fp-ok"):
        deps.ensured.add(pass_id)  # as if ensured a moment ago: no billing runs here to ask
    fast, slow = create_app(deps), create_app(deps, fast_path=False)
    assert getattr(fast, "fast_routes", None) and not getattr(slow, "fast_routes", None)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=fast), base_url="http://gw") as a, \
                httpx.AsyncClient(transport=httpx.ASGITransport(app=slow), base_url="http://gw") as b:
            for name, path, body, headers in cases(settings):
                got = answer(await a.post(path, content=body, headers=headers))
                want = answer(await b.post(path, content=body, headers=headers))
                assert got == want, name
                assert 400 <= got[0] < 500 or b'"status":"queued"' in got[1], (name, got)
    finally:
        await deps.verifier.aclose()
