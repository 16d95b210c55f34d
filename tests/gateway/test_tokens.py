"""Token verification against a local Supabase Auth that really speaks JWKS and `GET /auth/v1/user`."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import jwt
import pytest

from libs.settings import Settings
from services.gateway.adapters.supabase import AuthApiVerifier, JwksKeys, LocalVerifier, build_verifier
from tests.wire import SupabaseAuthServer

SECRET = "hs256-secret-for-tests-0123456789abcdef"
UID = "6f1c1a52-2b7e-4c3a-9d5e-0a1b2c3d4e5f"


@pytest.fixture
def auth() -> Iterator[SupabaseAuthServer]:
    with SupabaseAuthServer() as server:
        assert isinstance(server, SupabaseAuthServer)
        yield server


def local(auth: SupabaseAuthServer, ttl_s: float = 600.0) -> LocalVerifier:
    return LocalVerifier(SECRET, JwksKeys(auth.jwks_url, ttl_s, httpx.AsyncClient()), "authenticated")


@pytest.mark.parametrize("kind", ["es256", "rs256"])
async def test_a_token_signed_by_a_published_key_signs_the_customer_in(auth: SupabaseAuthServer, kind: str) -> None:
    """ES256 and RS256 tokens verify with the JWKS key their `kid` names; the email is lower-cased."""
    kid = auth.add_key(kind)
    verifier = local(auth)
    user = await verifier.verify(auth.sign(kid, UID, "Ana@Example.com"))
    assert user is not None and user.user_id == UID and user.email == "ana@example.com" and user.email_verified
    await verifier.aclose()


async def test_expired_wrong_audience_forged_and_garbage_tokens_are_refused(auth: SupabaseAuthServer) -> None:
    """Expiry and audience are checked; a key not in the JWKS, an alg swap or junk verify as nobody."""
    kid = auth.add_key("es256")
    stranger = auth.add_key("es256", publish=False)
    verifier = local(auth)
    assert await verifier.verify(auth.sign(kid, UID, exp_in=-60)) is None
    assert await verifier.verify(auth.sign(kid, UID, aud="someone-else")) is None
    assert await verifier.verify(auth.sign(stranger, UID)) is None
    header_swap = jwt.encode({"sub": UID, "aud": "authenticated", "exp": int(time.time()) + 60},
                             "a-wrong-secret-of-enough-length-0123456789", algorithm="HS256", headers={"kid": kid})
    assert await verifier.verify(header_swap) is None
    no_exp = jwt.encode({"sub": UID, "aud": "authenticated"}, SECRET, algorithm="HS256")
    assert await verifier.verify(no_exp) is None
    for junk in ("not.a.jwt", "x", ""):
        assert await verifier.verify(junk) is None
    good = jwt.encode({"sub": UID, "aud": "authenticated", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256")
    assert (await verifier.verify(good)) is not None  # the HS256 secret still signs customers in
    await verifier.aclose()


async def test_keys_are_cached_and_a_rotated_key_is_fetched_once(auth: SupabaseAuthServer) -> None:
    """Many verifications fetch the JWKS once; a token of a newly rotated key refetches it once
    and verifies; a retired key no longer verifies; unknown kids do not make us hammer the endpoint."""
    old = auth.add_key("es256")
    verifier = local(auth)
    for _ in range(20):
        assert await verifier.verify(auth.sign(old, UID)) is not None
    assert auth.count("jwks") == 1
    new = auth.rotate("rs256")
    assert (await verifier.verify(auth.sign(new, UID))) is not None
    assert auth.count("jwks") == 2
    assert await verifier.verify(auth.sign(old, UID)) is None  # retired at the rotation
    for _ in range(10):  # ids nobody published: at most one refetch per cooldown
        assert await verifier.verify(auth.sign(auth.add_key("es256", publish=False), UID)) is None
    assert auth.count("jwks") <= 3
    await verifier.aclose()


async def test_the_key_cache_expires_after_its_ttl(auth: SupabaseAuthServer) -> None:
    """With a TTL of 0 every verification refetches: the TTL, not luck, bounds the cache."""
    kid = auth.add_key("es256")
    verifier = local(auth, ttl_s=0.0)
    for _ in range(3):
        assert await verifier.verify(auth.sign(kid, UID)) is not None
    assert auth.count("jwks") == 3
    await verifier.aclose()


async def test_the_auth_api_answers_who_a_token_is_and_answers_are_reused(auth: SupabaseAuthServer) -> None:
    """`GET /auth/v1/user` with the Bearer and `apikey`: the user for a good token (cached), nobody
    for a bad one or a wrong apikey."""
    kid = auth.add_key("es256")
    settings = Settings(_env_file=None, token_verification="auth_api", supabase_url=auth.project_url,  # type: ignore[call-arg]
                        supabase_anon_key=auth.api_key, auth_api_cache_s=60.0)
    verifier = build_verifier(settings)
    assert isinstance(verifier, AuthApiVerifier)
    token = auth.sign(kid, UID, "Bo@Example.com", email_verified=False)
    for _ in range(5):
        user = await verifier.verify(token)
        assert user is not None and user.user_id == UID and user.email == "bo@example.com"
        assert not user.email_verified  # GoTrue's email_confirmed_at is null
    assert auth.count("user") == 1
    assert await verifier.verify(auth.sign(kid, UID, exp_in=-30)) is None
    assert await verifier.verify("garbage") is None
    wrong_key = AuthApiVerifier(auth.project_url, "not-the-anon-key", 60.0, httpx.AsyncClient())
    assert await wrong_key.verify(auth.sign(kid, UID)) is None
    await verifier.aclose()
    await wrong_key.aclose()


def test_auth_api_mode_needs_its_url_and_key() -> None:
    with pytest.raises(ValueError, match="MMA_SUPABASE_URL"):
        build_verifier(Settings(_env_file=None, token_verification="auth_api"))  # type: ignore[call-arg]
