"""Who is calling: the pass id (MEGA.md / ROUTES.md) and a verified Supabase user.

Order: body `customerId`, `passId`, `pass_id` (`customer_id` too), then the
`X-Mina-Pass-Id` header, then for GET the query `customerId`/`passId`, then the
verified Bearer user (`pass:user:<sub>`), else a fresh `pass:anon:<uuid4>`.
A JWT is only ever trusted after its HS256 signature checks out.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
import orjson
from fastapi import Request

from libs.errors import InvalidInputError
from libs.settings import Settings

PASS_HEADER = "X-Mina-Pass-Id"
BODY_KEYS = ("customerId", "passId", "pass_id", "customer_id")
QUERY_KEYS = ("customerId", "passId")
# MEGA.md forms; ASCII only, so the id is safe in a response header, a subject and a Postgres text column
PASS_ID_FORM = re.compile(r"pass:(?:anon|user|shopify|email):[A-Za-z0-9._@+=:-]{1,200}")


@dataclass(frozen=True)
class JwtUser:
    user_id: str
    email: str | None


@dataclass(frozen=True)
class Identity:
    pass_id: str
    source: str  # body / header / query / jwt / minted
    user: JwtUser | None = None
    token_invalid: bool = False  # a Bearer token was sent but did not verify


def normalize_pass_id(value: Any) -> str | None:
    """A client value as a pass id: `pass:*` as is, another id (legacy Shopify) as `pass:shopify:<id>`.

    A value that is present but not one of the MEGA.md forms (odd characters, NUL, too long)
    is a 400 `INVALID_PASS_ID` here, before it can reach a header, a subject or the database.
    """
    if value is None or isinstance(value, bool | dict | list):
        return None
    text = str(value).strip()
    if not text or text.lower() in ("anonymous", "null", "undefined"):
        return None
    pass_id = text if text.startswith("pass:") else f"pass:shopify:{text}"
    if PASS_ID_FORM.fullmatch(pass_id) is None:
        raise InvalidInputError("The pass id is not a valid Mina pass id.", code="INVALID_PASS_ID")
    return pass_id


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization") or ""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def verify_jwt(token: str, settings: Settings) -> JwtUser | None:
    """The Supabase user of a token signed with the project secret; None when it does not verify."""
    secret = settings.supabase_jwt_secret
    if secret is None:
        return None
    try:
        claims = jwt.decode(token, secret.get_secret_value(), algorithms=["HS256"],
                            options={"verify_aud": False, "require": ["sub"]})
    except jwt.PyJWTError:
        return None
    sub = str(claims.get("sub") or "").strip()
    if not sub:
        return None
    email = claims.get("email")
    return JwtUser(user_id=sub, email=str(email).lower() if email else None)


async def json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object (cached by Starlette), {} for anything else."""
    if request.method in ("GET", "HEAD", "DELETE", "OPTIONS"):
        return {}
    if "json" not in (request.headers.get("content-type") or "json"):
        return {}
    raw = await request.body()
    if not raw:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def explicit_pass_id(request: Request, body: dict[str, Any]) -> tuple[str | None, str]:
    for key in BODY_KEYS:
        found = normalize_pass_id(body.get(key))
        if found:
            return found, "body"
    found = normalize_pass_id(request.headers.get(PASS_HEADER))
    if found:
        return found, "header"
    if request.method == "GET":
        for key in QUERY_KEYS:
            found = normalize_pass_id(request.query_params.get(key))
            if found:
                return found, "query"
    return None, ""


async def resolve(request: Request, settings: Settings) -> Identity:
    """Resolve the caller's identity and remember it for the `X-Mina-Pass-Id` response header."""
    body = await json_body(request)
    token = bearer_token(request)
    user = verify_jwt(token, settings) if token else None
    pass_id, source = explicit_pass_id(request, body)
    if pass_id is None and user is not None:
        pass_id, source = f"pass:user:{user.user_id}", "jwt"
    if pass_id is None:
        pass_id, source = f"pass:anon:{uuid.uuid4()}", "minted"
    identity = Identity(pass_id=pass_id, source=source, user=user, token_invalid=bool(token) and user is None)
    request.state.pass_id = pass_id
    return identity
