"""The gateway's ASGI middleware, outermost first: request context, CORS, the request guard.

- `RequestContext`: the request id (state and `X-Request-Id`), the `X-Mina-Pass-Id` reply
  header, metrics and the one log line of every request, CORS preflights included.
- `Cors`: Starlette's `CORSMiddleware` with the origins, headers and exposed headers of
  ROUTES.md; an allowed preflight is 204 (ROUTES.md) rather than Starlette's 200 "OK".
- `RequestGuard`: a NUL in the URL is 400 and a body over `max_body_bytes` is 413 before any
  route reads it (inside CORS, so a browser can read those answers too).

Pure ASGI middleware (not BaseHTTPMiddleware), so SSE responses stream untouched and the
structlog context of the request is the one its handler sees.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
import structlog
from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.logging import bound
from libs.metrics import HTTP_LATENCY, HTTP_REQUESTS
from libs.settings import Settings
from services.gateway.errors import is_mma_path, legacy_body, mma_body

log = structlog.get_logger("gateway")

ALLOW_HEADERS = ("Content-Type", "Authorization", "X-Mina-Pass-Id", "Idempotency-Key", "Last-Event-ID")
EXPOSE_HEADERS = ("X-Mina-Pass-Id", "X-Request-Id")
ALLOW_METHODS = ("GET", "POST", "PUT", "DELETE", "OPTIONS")
PREFLIGHT_MAX_AGE_S = 600


class Cors(CORSMiddleware):
    """No credentials; origins from settings (`cors_origins`)."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        super().__init__(app, allow_origins=list(settings.cors_origins), allow_methods=ALLOW_METHODS,
                         allow_headers=ALLOW_HEADERS, expose_headers=EXPOSE_HEADERS, max_age=PREFLIGHT_MAX_AGE_S)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 200:
            return response  # a refused origin, method or header: Starlette's 400 says which
        headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        return Response(status_code=204, headers=headers)


def new_request_id() -> str:
    """A random (version 4) UUID in its usual text form, without building a `uuid.UUID` (a third of the cost)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def context_headers(request_id: str, state: dict[str, object]) -> list[tuple[bytes, bytes]]:
    """`X-Request-Id`, and `X-Mina-Pass-Id` once the request named its caller (no route sets either)."""
    headers = [(b"x-request-id", request_id.encode("latin-1"))]
    pass_id = state.get("pass_id")
    if pass_id and str(pass_id).isascii():  # validated ids always are; never fail a reply on it
        headers.append((b"x-mina-pass-id", str(pass_id).encode("latin-1")))
    return headers


_SERIES_KEPT = 2_000  # labelled series remembered (routes x methods x statuses; a client invents methods)
_series: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def _metrics_of(route: str, method: str, status: int) -> tuple[Any, Any]:
    """The request counter and latency histogram of these labels (`labels()` takes a lock and builds keys)."""
    key = (route, method, status)
    found = _series.get(key)
    if found is None:
        found = (HTTP_REQUESTS.labels(route, method, str(status)), HTTP_LATENCY.labels(route))
        if len(_series) < _SERIES_KEPT:
            _series[key] = found
    return found


def observe(scope: Scope, method: str, status: int, started: float) -> None:
    """Metrics and the one canonical log line of the request (no bodies, no headers: no secrets)."""
    route = getattr(scope.get("route"), "path", None) or "unmatched"
    elapsed = time.perf_counter() - started
    requests, latency = _metrics_of(route, method, status)
    requests.inc()
    latency.observe(elapsed)
    state = scope.get("state") or {}
    log.info("gateway.request_handled", method=method, route=route, status=status,
             duration_ms=round(elapsed * 1000, 2), request_id=state.get("request_id"),
             pass_id=state.get("pass_id"))


class RequestContext:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        method: str = scope["method"]
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message["headers"] = [*message.get("headers", ()), *context_headers(request_id, state)]
            await send(message)

        with bound(request_id=request_id):
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                observe(scope, method, status_holder["status"], started)


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.max_body_bytes = settings.max_body_bytes

    @staticmethod
    async def _reply(scope: Scope, send: Send, status: int, code: str, message: str,
                     extra_headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        path: str = scope["path"]
        request_id = str((scope.get("state") or {}).get("request_id") or "")
        body = mma_body(code, message) if is_mma_path(path) else legacy_body(code, message, request_id)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), *extra_headers]})
        await send({"type": "http.response.body", "body": orjson.dumps(body)})

    @staticmethod
    async def _discard_body(receive: Receive, cap: int) -> None:
        """Read (and drop) what the client is still sending, so it can read our 413 instead of a reset."""
        seen = 0
        while seen <= cap:
            message = await receive()
            if message["type"] != "http.request":
                return
            seen += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        query: bytes = scope.get("query_string", b"")
        if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
            # NUL cannot be stored or matched anywhere downstream (Postgres text refuses it): one 400 here
            await self._reply(scope, send, 400, "INVALID_INPUT", "The URL must not contain NUL characters.")
            return
        length = Headers(scope=scope).get("content-length")
        if length and length.isdigit() and int(length) > self.max_body_bytes:
            await self._discard_body(receive, 4 * self.max_body_bytes)
            await self._reply(scope, send, 413, "PAYLOAD_TOO_LARGE",
                              f"The request body is larger than {self.max_body_bytes} bytes.",
                              ((b"connection", b"close"),))
            return
        await self.app(scope, receive, send)
