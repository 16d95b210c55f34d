"""Verifying a Supabase access token: the HS256 secret, the project's JWKS, or the Auth API.

Chosen by settings (`token_verification`): `local` checks the signature here, HS256 tokens
with `supabase_jwt_secret` and ES256/RS256 tokens with the keys published at the JWKS URL
(cached for `jwks_cache_s`; a token naming a key id the cache does not hold refetches the
set once, so a rotated key signs customers in at once, while a flood of unknown ids cannot
make us hammer Supabase); `auth_api` asks `GET {supabase_url}/auth/v1/user`, as the old
backend's `auth.getUser` did, and reuses an answer for `auth_api_cache_s`. Expiry and
audience are always checked. A token that does not verify is `None`, never an exception.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog

from libs.settings import Settings

if TYPE_CHECKING:  # imported where first used: neither is needed to start (jwt brings cryptography)
    import httpx
    import jwt

log = structlog.get_logger("gateway")

ASYMMETRIC = ("ES256", "RS256")
UNKNOWN_KID_COOLDOWN_S = 10.0  # at most one refetch for unknown key ids per this many seconds
HTTP_TIMEOUT_S = 5.0
CACHE_ENTRIES = 10_000
LEEWAY_S = 5


@dataclass(frozen=True)
class JwtUser:
    user_id: str
    email: str | None
    email_verified: bool = False


class TokenVerifier(Protocol):
    async def verify(self, token: str) -> JwtUser | None: ...

    async def aclose(self) -> None: ...


def _email_verified(claims: dict[str, object]) -> bool:
    meta = claims.get("user_metadata")
    flag = claims.get("email_verified")
    if flag is None and isinstance(meta, dict):
        flag = meta.get("email_verified")
    return flag is True


def user_of_claims(claims: dict[str, object]) -> JwtUser | None:
    sub = str(claims.get("sub") or "").strip()
    if not sub:
        return None
    email = claims.get("email")
    return JwtUser(user_id=sub, email=str(email).strip().lower() if email else None,
                   email_verified=bool(email) and _email_verified(claims))


class JwksKeys:
    """The JWKS of one URL: fetched on first use, again after `ttl_s`, or once for an unknown key id."""

    def __init__(self, url: str, ttl_s: float, client: httpx.AsyncClient) -> None:
        self.url = url
        self.ttl_s = ttl_s
        self.client = client
        self.keys: dict[str, jwt.PyJWK] = {}
        self.fetched_at = float("-inf")
        self.unknown_refetch_at = float("-inf")
        self.fetches = 0
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        import httpx
        import jwt

        self.fetches += 1
        try:
            response = await self.client.get(self.url, timeout=HTTP_TIMEOUT_S)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("gateway.jwks_fetch_failed", url=self.url, error=repr(exc))
            return  # keep the keys we had
        keys: dict[str, jwt.PyJWK] = {}
        for raw in data.get("keys", []) if isinstance(data, dict) else []:
            try:
                key = jwt.PyJWK(raw)
            except (jwt.PyJWTError, KeyError, ValueError, TypeError):
                continue  # a key type or curve we do not use
            if key.key_id and raw.get("use", "sig") == "sig":
                keys[key.key_id] = key
        self.keys = keys
        self.fetched_at = time.monotonic()
        log.info("gateway.jwks_fetched", url=self.url, key_ids=sorted(keys))

    async def key(self, kid: str) -> jwt.PyJWK | None:
        async with self._lock:
            now = time.monotonic()
            if now - self.fetched_at > self.ttl_s:
                await self._fetch()
            elif kid not in self.keys and now - self.unknown_refetch_at >= UNKNOWN_KID_COOLDOWN_S:
                self.unknown_refetch_at = now
                await self._fetch()  # a key rotated in since the last fetch
            return self.keys.get(kid)


class LocalVerifier:
    """HS256 with the project secret, ES256/RS256 with the JWKS; `aud` and `exp` required."""

    def __init__(self, secret: str | None, jwks: JwksKeys | None, audience: str) -> None:
        self.secret = secret
        self.jwks = jwks
        self.audience = audience

    async def verify(self, token: str) -> JwtUser | None:
        import jwt

        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return None
        alg = header.get("alg")
        key: str | jwt.PyJWK
        if alg == "HS256" and self.secret:
            key = self.secret
        elif alg in ASYMMETRIC and self.jwks is not None and isinstance(header.get("kid"), str):
            found = await self.jwks.key(header["kid"])
            if found is None or (found.algorithm_name not in (alg, None)):
                return None
            key = found
        else:
            return None
        try:
            claims = jwt.decode(token, key, algorithms=[alg], audience=self.audience, leeway=LEEWAY_S,
                                options={"require": ["sub", "exp", "aud"]})
        except jwt.PyJWTError:
            return None
        return user_of_claims(claims)

    async def aclose(self) -> None:
        if self.jwks is not None:
            await self.jwks.client.aclose()


class AuthApiVerifier:
    """`GET {url}/auth/v1/user` with the token and the `apikey`; answers reused for `ttl_s`."""

    def __init__(self, base_url: str, api_key: str, ttl_s: float, client: httpx.AsyncClient) -> None:
        self.url = f"{base_url.rstrip('/')}/auth/v1/user"
        self.api_key = api_key
        self.ttl_s = ttl_s
        self.client = client
        self.cache: OrderedDict[str, tuple[float, JwtUser | None]] = OrderedDict()

    async def verify(self, token: str) -> JwtUser | None:
        import httpx

        digest = hashlib.sha256(token.encode()).hexdigest()  # never keep the token itself
        now = time.monotonic()
        hit = self.cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            response = await self.client.get(self.url, timeout=HTTP_TIMEOUT_S, headers={
                "Authorization": f"Bearer {token}", "apikey": self.api_key})
        except httpx.HTTPError as exc:
            log.warning("gateway.auth_api_unreachable", error=repr(exc))
            return None  # not cached: the next request asks again
        user: JwtUser | None = None
        if response.status_code == 200:
            try:
                data = response.json()
            except ValueError:
                data = None
            if isinstance(data, dict) and data.get("id"):
                email = data.get("email")
                user = JwtUser(user_id=str(data["id"]), email=str(email).lower() if email else None,
                               email_verified=bool(email) and bool(data.get("email_confirmed_at")))
        elif response.status_code >= 500:
            log.warning("gateway.auth_api_failed", status=response.status_code)
            return None
        self.cache[digest] = (now + self.ttl_s, user)
        self.cache.move_to_end(digest)
        while len(self.cache) > CACHE_ENTRIES:
            self.cache.popitem(last=False)
        return user

    async def aclose(self) -> None:
        await self.client.aclose()


def jwks_url_of(settings: Settings) -> str | None:
    if settings.supabase_jwks_url:
        return settings.supabase_jwks_url
    if settings.supabase_url:
        return f"{settings.supabase_url.rstrip('/')}/auth/v1/.well-known/jwks.json"
    return None


def build_verifier(settings: Settings) -> TokenVerifier:
    """The verifier the settings choose (`auth_api` needs `supabase_url` and `supabase_anon_key`)."""
    if settings.token_verification == "auth_api":
        if not settings.supabase_url or settings.supabase_anon_key is None:
            raise ValueError("token_verification=auth_api needs MMA_SUPABASE_URL and MMA_SUPABASE_ANON_KEY")
        import httpx

        return AuthApiVerifier(settings.supabase_url, settings.supabase_anon_key.get_secret_value(),
                               settings.auth_api_cache_s, httpx.AsyncClient())
    url = jwks_url_of(settings)
    jwks = None
    if url:
        import httpx

        jwks = JwksKeys(url, settings.jwks_cache_s, httpx.AsyncClient())
    secret = settings.supabase_jwt_secret.get_secret_value() if settings.supabase_jwt_secret else None
    return LocalVerifier(secret, jwks, settings.jwt_audience)
