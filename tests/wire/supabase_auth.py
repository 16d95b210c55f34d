"""A local Supabase Auth: the JWKS endpoint (`GET /auth/v1/.well-known/jwks.json`, route `jwks`) and
the user endpoint (`GET /auth/v1/user`, route `user`), speaking what GoTrue speaks.

Keys are real: `add_key("es256"|"rs256")` makes a key pair and publishes its public JWK;
`rotate(...)` publishes a new one and retires the old; `sign(claims, kid)` mints a token with
it. The user endpoint answers 200 with the user of a token this server signed (checked with
`apikey` and expiry, as GoTrue does), else 401 `{"code": 401, "msg": ...}` / `bad_jwt`.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.wire.base import Response, WireServer, json_response

AUDIENCE = "authenticated"


class SupabaseAuthServer(WireServer):
    def __init__(self, api_key: str = "anon-key-test-1") -> None:
        super().__init__()
        self.api_key = api_key
        self._private: dict[str, tuple[str, Any]] = {}  # kid -> (alg, private key)
        self._published: list[str] = []
        self._keys_lock = threading.Lock()

    @property
    def project_url(self) -> str:
        return self.url

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/auth/v1/.well-known/jwks.json"

    # ------------------------------------------------------------------ keys

    def add_key(self, kind: str = "es256", publish: bool = True) -> str:
        kid = f"{kind}-{uuid.uuid4().hex[:8]}"
        private: Any = (ec.generate_private_key(ec.SECP256R1()) if kind == "es256"
                        else rsa.generate_private_key(public_exponent=65537, key_size=2048))
        with self._keys_lock:
            self._private[kid] = ("ES256" if kind == "es256" else "RS256", private)
            if publish:
                self._published.append(kid)
        return kid

    def publish(self, kid: str) -> None:
        with self._keys_lock:
            self._published.append(kid)

    def rotate(self, kind: str = "es256") -> str:
        """A new signing key is published and the previous ones are retired (no longer in the JWKS)."""
        kid = self.add_key(kind, publish=False)
        with self._keys_lock:
            self._published = [kid]
        return kid

    def jwks(self) -> dict[str, Any]:
        keys = []
        with self._keys_lock:
            for kid in self._published:
                alg, private = self._private[kid]
                algo = jwt.algorithms.ECAlgorithm if alg == "ES256" else jwt.algorithms.RSAAlgorithm
                jwk = json.loads(algo.to_jwk(private.public_key()))
                keys.append({**jwk, "kid": kid, "alg": alg, "use": "sig", "key_ops": ["verify"]})
        return {"keys": keys}

    def sign(self, kid: str, sub: str, email: str | None = None, *, exp_in: int = 600, aud: str = AUDIENCE,
             email_verified: bool = True, **extra: Any) -> str:
        alg, private = self._private[kid]
        now = int(time.time())
        claims: dict[str, Any] = {"sub": sub, "aud": aud, "exp": now + exp_in, "iat": now, "role": "authenticated",
                                  "iss": f"{self.url}/auth/v1", "email": email,
                                  "user_metadata": {"email_verified": email_verified}, **extra}
        return jwt.encode(claims, private, algorithm=alg, headers={"kid": kid})

    # ------------------------------------------------------------------ wire

    def route(self, method: str, path: str) -> str | None:
        if method == "GET" and path == "/auth/v1/.well-known/jwks.json":
            return "jwks"
        if method == "GET" and path == "/auth/v1/user":
            return "user"
        return None

    def handle(self, route: str, method: str, path: str, body: Any) -> Response:
        if route == "jwks":
            return json_response(200, self.jwks())
        headers = self.request_headers()
        if headers.get("apikey") != self.api_key:
            return json_response(401, {"message": "Invalid API key", "hint": "Double check your Supabase `anon` "
                                       "or `service_role` API key."})
        token = headers.get("authorization", "").removeprefix("Bearer ").strip()
        claims = self._verify(token)
        if claims is None:
            return json_response(403, {"code": 403, "error_code": "bad_jwt",
                                       "msg": "invalid JWT: unable to parse or verify signature"})
        now = datetime.now(UTC).isoformat()
        confirmed = now if (claims.get("user_metadata") or {}).get("email_verified") else None
        return json_response(200, {"id": claims["sub"], "aud": AUDIENCE, "role": "authenticated",
                                   "email": claims.get("email"), "email_confirmed_at": confirmed,
                                   "app_metadata": {"provider": "email"}, "user_metadata": claims.get("user_metadata"),
                                   "created_at": now, "updated_at": now})

    def _verify(self, token: str) -> dict[str, Any] | None:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError:
            return None
        with self._keys_lock:
            found = self._private.get(kid or "")
        if found is None:
            return None
        alg, private = found
        try:
            claims: dict[str, Any] = jwt.decode(token, private.public_key(), algorithms=[alg], audience=AUDIENCE)
        except jwt.PyJWTError:
            return None
        return claims
