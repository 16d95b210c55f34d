"""Who is calling: the pass id (MEGA.md / ROUTES.md) and a verified Supabase user.

Order: body `customerId`, `passId`, `pass_id` (`customer_id` too), then the
`X-Mina-Pass-Id` header, then for GET the query `customerId`/`passId`, then the
verified Bearer user (`pass:user:<sub>`), else a fresh `pass:anon:<uuid4>`.
The Bearer token is verified once, at the edge (`services.gateway.auth.access`), which also
refuses a pass id the token does not prove before any route runs.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import Request

from libs.errors import InvalidInputError
from services.gateway.adapters.supabase import JwtUser

PASS_HEADER = "X-Mina-Pass-Id"
PASS_HEADER_KEY = PASS_HEADER.lower().encode()
ABSENT_TOKENS = ("null", "undefined", "[object Object]")  # what a client without a session sends
BODY_KEYS = ("customerId", "passId", "pass_id", "customer_id")
QUERY_KEYS = ("customerId", "passId")
# MEGA.md forms; ASCII only, so the id is safe in a response header, a subject and a Postgres text column
PASS_ID_FORM = re.compile(r"pass:(?:anon|user|shopify|email):[A-Za-z0-9._@+=:-]{1,200}")


@dataclass(frozen=True)
class Identity:
    pass_id: str
    source: str  # body / header / query / jwt / minted
    user: JwtUser | None = None
    token_invalid: bool = False  # a Bearer token was sent but did not verify


def normalize_pass_id(value: object) -> str | None:
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


def header(request: Request, name: bytes) -> str | None:
    """The first request header called `name` (lowercase), as `request.headers.get` reads it, without
    building `Headers` or raising KeyError inside it for a missing one (the create path asks for several)."""
    for key, value in request.scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def state_of(request: Request) -> dict[str, Any]:
    """`request.state`'s own dict (the scope's), so a missing attribute is a dict miss, not an exception."""
    state: dict[str, Any] = request.scope.setdefault("state", {})
    return state


def bearer_token(request: Request) -> str | None:
    scheme, _, token = (header(request, b"authorization") or "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or token in ABSENT_TOKENS:
        return None
    return token


JSON_BODY = "gateway.json_body"  # the scope key of the parsed body (the edge, the identity and the route read it)


async def json_body(request: Request) -> dict[str, object]:
    """The request's JSON object as orjson reads it, {} for anything else; parsed once per request."""
    cached: dict[str, object] | None = request.scope.get(JSON_BODY)
    if cached is not None:
        return cached
    data = await _parse_json_body(request)
    request.scope[JSON_BODY] = data
    return data


async def _parse_json_body(request: Request) -> dict[str, object]:
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


def explicit_pass_id(request: Request, body: dict[str, object]) -> tuple[str | None, str]:
    for key in BODY_KEYS:
        found = normalize_pass_id(body.get(key))
        if found:
            return found, "body"
    found = normalize_pass_id(header(request, PASS_HEADER_KEY))
    if found:
        return found, "header"
    if request.method == "GET":
        for key in QUERY_KEYS:
            found = normalize_pass_id(request.query_params.get(key))
            if found:
                return found, "query"
    return None, ""


async def resolve(request: Request) -> Identity:
    """Resolve the caller's identity and remember it for the `X-Mina-Pass-Id` response header.

    The user is the one the edge verified (`request.state.user`); a pass id the edge found
    unproven on a route that drops rather than refuses it (crash reports) is not used.
    """
    body = await json_body(request)
    state = state_of(request)
    user: JwtUser | None = state.get("user")
    token_sent = bearer_token(request) is not None and not state.get("admin_token", False)
    pass_id, source = (None, "") if state.get("unproven", False) else explicit_pass_id(request, body)
    if pass_id is None and user is not None:
        pass_id, source = f"pass:user:{user.user_id}", "jwt"
    if pass_id is None:
        pass_id, source = f"pass:anon:{uuid.uuid4()}", "minted"
    identity = Identity(pass_id=pass_id, source=source, user=user, token_invalid=token_sent and user is None)
    state["pass_id"] = pass_id
    return identity
