"""The one ASGI middleware of the gateway: request id, pass id header, body limit, CORS, metrics.

A pure ASGI middleware (not BaseHTTPMiddleware) so SSE responses stream untouched and
the structlog context of the request is the one its handler sees.
"""

from __future__ import annotations

import time
import uuid

import orjson
import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from libs.metrics import HTTP_LATENCY, HTTP_REQUESTS
from libs.settings import Settings
from services.gateway.errors import is_mma_path, legacy_body, mma_body

log = structlog.get_logger("gateway")

ALLOW_HEADERS = "Content-Type, Authorization, X-Mina-Pass-Id, Idempotency-Key, Last-Event-ID"
EXPOSE_HEADERS = "X-Mina-Pass-Id, X-Request-Id"
ALLOW_METHODS = "GET, POST, PUT, DELETE, OPTIONS"


class GatewayMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.origins = set(settings.cors_origins)

    def _cors(self, origin: str | None) -> dict[str, str]:
        if not origin or not (origin in self.origins or "*" in self.origins):
            return {}
        return {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": EXPOSE_HEADERS,
                "Vary": "Origin"}

    async def _reply(self, send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
        raw = [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    async def _discard_body(self, receive: Receive, cap: int) -> None:
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
        request_id = str(uuid.uuid4())
        state = scope.setdefault("state", {})
        state["request_id"] = request_id
        headers = Headers(scope=scope)
        cors = self._cors(headers.get("origin"))
        path: str = scope["path"]
        method: str = scope["method"]
        started = time.perf_counter()
        status_holder = {"status": 500}

        if method == "OPTIONS":
            preflight = {**cors, "Access-Control-Allow-Methods": ALLOW_METHODS,
                         "Access-Control-Allow-Headers": ALLOW_HEADERS, "Access-Control-Max-Age": "600",
                         "X-Request-Id": request_id} if cors else {"X-Request-Id": request_id}
            await self._reply(send, 204, b"", preflight)
            self._observe(scope, method, 204, started)
            return

        if "\x00" in path or b"%00" in scope.get("query_string", b"") or b"\x00" in scope.get("query_string", b""):
            # NUL cannot be stored or matched anywhere downstream (Postgres text refuses it): one 400 here
            message = "The URL must not contain NUL characters."
            body = (mma_body("INVALID_INPUT", message) if is_mma_path(path)
                    else legacy_body("INVALID_INPUT", message, request_id))
            await self._reply(send, 400, orjson.dumps(body), {**cors, "Content-Type": "application/json",
                                                               "X-Request-Id": request_id})
            self._observe(scope, method, 400, started)
            return

        length = headers.get("content-length")
        if length and length.isdigit() and int(length) > self.settings.max_body_bytes:
            message = f"The request body is larger than {self.settings.max_body_bytes} bytes."
            body = (mma_body("PAYLOAD_TOO_LARGE", message) if is_mma_path(path)
                    else legacy_body("PAYLOAD_TOO_LARGE", message, request_id))
            await self._discard_body(receive, 4 * self.settings.max_body_bytes)
            await self._reply(send, 413, orjson.dumps(body), {**cors, "Content-Type": "application/json",
                                                               "X-Request-Id": request_id, "Connection": "close"})
            self._observe(scope, method, 413, started)
            return

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                out = MutableHeaders(scope=message)
                out["X-Request-Id"] = request_id
                pass_id = state.get("pass_id")
                if pass_id and str(pass_id).isascii():  # validated ids always are; never fail a reply on it
                    out["X-Mina-Pass-Id"] = str(pass_id)
                for key, value in cors.items():
                    out[key] = value
            await send(message)

        with structlog.contextvars.bound_contextvars(request_id=request_id):
            try:
                await self.app(scope, receive, send_wrapper)
            finally:
                self._observe(scope, method, status_holder["status"], started)

    def _observe(self, scope: Scope, method: str, status: int, started: float) -> None:
        """Metrics and the one canonical log line of the request (no bodies, no headers: no secrets)."""
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        elapsed = time.perf_counter() - started
        HTTP_REQUESTS.labels(route, method, str(status)).inc()
        HTTP_LATENCY.labels(route).observe(elapsed)
        state = scope.get("state") or {}
        log.info("gateway.request_handled", method=method, route=route, status=status,
                 duration_ms=round(elapsed * 1000, 2), request_id=state.get("request_id"),
                 pass_id=state.get("pass_id"))
