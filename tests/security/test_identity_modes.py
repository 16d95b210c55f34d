"""The gateway signs customers in with the verification the settings choose: JWKS keys (rotation
honoured), the Auth API's user endpoint, and the relaxed migration window (logged, counted)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Services
from tests.wire import SupabaseAuthServer


@pytest.fixture
def auth() -> Iterator[SupabaseAuthServer]:
    with SupabaseAuthServer() as server:
        assert isinstance(server, SupabaseAuthServer)
        yield server


async def test_jwks_tokens_sign_in_and_a_rotated_key_is_honoured(services: Services, auth: SupabaseAuthServer) -> None:
    """With `MMA_SUPABASE_URL`, an ES256 token from the project's JWKS signs in (`/auth/shopify-sync`)
    and proves its pass id; after a rotation to an RS256 key the new token does at once, the retired
    key's does not (401 on a customer route, `loggedIn:false` on sign-in)."""
    old = auth.add_key("es256")
    await services.start_all(welcome_credits=5, supabase_url=auth.project_url)
    uid = str(uuid.uuid4())
    me = f"pass:user:{uid}"
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=60) as client:
        token = auth.sign(old, uid, "Jo@Example.com")
        sync = await client.post("/auth/shopify-sync", headers={"Authorization": f"Bearer {token}"}, json={})
        assert sync.json()["loggedIn"] is True and sync.json()["passId"] == me, sync.text
        bal = await client.get("/credits/balance", params={"passId": me},
                               headers={"Authorization": f"Bearer {token}", "X-Mina-Pass-Id": me})
        assert bal.status_code == 200 and bal.json()["balance"] == 5, bal.text

        new = auth.rotate("rs256")
        fresh = auth.sign(new, uid, "jo@example.com")
        bal = await client.get("/credits/balance", params={"passId": me},
                               headers={"Authorization": f"Bearer {fresh}", "X-Mina-Pass-Id": me})
        assert bal.status_code == 200, bal.text
        stale = await client.get("/credits/balance", params={"passId": me},
                                 headers={"Authorization": f"Bearer {token}", "X-Mina-Pass-Id": me})
        assert stale.status_code == 401 and stale.json()["error"] == "NOT_AUTHENTICATED"
        again = await client.post("/auth/shopify-sync", headers={"Authorization": f"Bearer {token}"}, json={})
        assert again.json()["loggedIn"] is False
    assert 2 <= auth.count("jwks") <= 4  # cached between requests, refetched for the rotated key


async def test_auth_api_verification_and_the_relaxed_window(services: Services, auth: SupabaseAuthServer) -> None:
    """`token_verification=auth_api` asks `GET /auth/v1/user` (answers reused); `identity_relaxed`
    is logged at start and counts each unproven request it lets through."""
    kid = auth.add_key("es256")
    procs = await services.start_all(welcome_credits=5, supabase_url=auth.project_url,
                                     token_verification="auth_api", supabase_anon_key=auth.api_key)
    uid = str(uuid.uuid4())
    me = f"pass:user:{uid}"
    token = auth.sign(kid, uid, "kim@example.com")
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=60) as client:
        for _ in range(3):
            sync = await client.post("/auth/shopify-sync", headers={"Authorization": f"Bearer {token}"}, json={})
            assert sync.json()["loggedIn"] is True and sync.json()["passId"] == me, sync.text
        assert auth.count("user") == 1
        refused = await client.get("/credits/balance", params={"passId": me},
                                   headers={"Authorization": f"Bearer {auth.sign(kid, uid, exp_in=-60)}"})
        assert refused.status_code == 401
        assert not any(e.get("event") == "gateway.identity_relaxed" for e in procs["gateway"].log_lines())

    await procs["gateway"].stop()
    relaxed = await services.start("gateway", identity_relaxed=True)
    assert any(e.get("event") == "gateway.identity_relaxed" for e in relaxed.log_lines())
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=60) as client:
        let_through = await client.get("/credits/balance", params={"passId": me})
        assert let_through.status_code == 200 and let_through.json()["passId"] == me
        metrics = (await client.get("/metrics")).text
        assert 'mina_identity_relaxed_total{route="GET /credits/balance"} 1.0' in metrics, metrics[-2000:]
