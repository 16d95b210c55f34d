"""The create routes without FastAPI's routing and dependency machinery (issue #19, the accept rate).

`POST /mma/still/create` and `POST /mma/video/animate` carry most of the gateway's load, and
for them the generic stack (middleware, router, request handler, dependency solving, a second
JSON parse) cost more CPU than the create itself (docs/bench.md). `GatewayApp` serves a plain
request to those two paths itself, running the SAME code as the FastAPI route in the same
order: the identity rule (`edge`), the body model, the route function, the app's exception
handlers, then what the middleware adds (CORS and `Vary`, `X-Request-Id`, `X-Mina-Pass-Id`,
metrics and the log line of `RequestContext`).

Anything else goes to FastAPI untouched: other paths and methods, a query string, a body that
is not plain JSON `application/json` within `max_body_bytes`, a body orjson and the standard
library could read differently (a 19+ digit number), and a body the model refuses. Those checks
change nothing, so the FastAPI path answers such a request exactly as if this module did not
exist (the body read so far is handed back to it). The OpenAPI schema still comes from the
routes in `services/gateway/routes/generations.py`.
"""

from __future__ import annotations

import inspect
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import BaseModel, ValidationError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from libs.logging import bound
from libs.settings import Settings
from services.gateway.auth.access import edge
from services.gateway.auth.identity import JSON_BODY
from services.gateway.bodies import StillCreateBody, VideoAnimateBody
from services.gateway.middleware import Cors, context_headers, new_request_id, observe

FAST_BODIES: dict[str, type[BaseModel]] = {"/mma/still/create": StillCreateBody,
                                           "/mma/video/animate": VideoAnimateBody}
# what FastAPI reads as JSON and `json_body` too ("json" in it); other spellings take the FastAPI path
JSON_TYPES = frozenset((b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8"))
# orjson reads an integer past 64 bits as a float where the standard library (FastAPI) keeps the int
LONG_NUMBER = re.compile(rb"[0-9]{19}")
VARY_ORIGIN = (b"vary", b"Origin")

Handler = Callable[[Request, Any], Response | Awaitable[Response]]  # Starlette's exception handler


@dataclass(frozen=True)
class FastRoute:
    route: APIRoute
    model: type[BaseModel]
    endpoint: Callable[..., Awaitable[Response]]


class GatewayApp(FastAPI):
    """FastAPI, serving the create routes' plain requests directly (`enable_fast_path`)."""

    fast_routes: Mapping[str, FastRoute] = MappingProxyType({})  # none until `enable_fast_path`

    def enable_fast_path(self, settings: Settings) -> None:
        """Call once the routers, handlers and middleware are in place."""
        routes = {ctx.path: ctx.original_route for ctx in iter_route_contexts(self.routes)
                  if isinstance(ctx.original_route, APIRoute) and "POST" in (ctx.methods or ())}
        self.fast_routes = {path: FastRoute(routes[path], model, routes[path].endpoint)
                            for path, model in FAST_BODIES.items()}
        self.fast_cors = Cors(self.router, settings)  # the same CORS rules as the middleware's
        self.fast_max_body = settings.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            fast = self.fast_routes.get(scope["path"])
            if fast is not None:
                await self._serve_fast(fast, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _serve_fast(self, fast: FastRoute, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        length, content_type, origin = _scan(scope["headers"])
        if (scope.get("query_string") or scope.get("root_path") or content_type is None
                or content_type.lower() not in JSON_TYPES or length is None or not length.isdigit()
                or not 0 < int(length) <= self.fast_max_body):
            await super().__call__(scope, receive, send)
            return
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                await super().__call__(scope, replay(messages, receive), send)
                return
            if not message.get("more_body", False):
                break
        raw = b"".join(m.get("body", b"") for m in messages)
        body = read_body(raw, fast.model)
        if body is None:
            await super().__call__(scope, replay(messages, receive), send)
            return
        data, model = body
        scope["app"], scope["route"], scope["endpoint"], scope["path_params"] = self, fast.route, fast.endpoint, {}
        scope[JSON_BODY] = data
        await self._answer(fast, model, scope, replay([{"type": "http.request", "body": raw}], receive), send,
                           started, None if origin is None else origin.decode("latin-1"))

    async def _answer(self, fast: FastRoute, model: BaseModel, scope: Scope, receive: Receive, send: Send,
                      started: float, origin: str | None) -> None:
        """What the middleware, the exception handlers and FastAPI's route do, in their order."""
        response_started = False
        request_id = new_request_id()
        state: dict[str, Any] = scope.setdefault("state", {})
        state["request_id"] = request_id
        status = 500

        async def send_out(message: Message) -> None:  # RequestContext, then ServerErrorMiddleware
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), *context_headers(request_id, state)]
                response_started = True
            await send(message)

        async def send_cors(message: Message) -> None:  # Cors (Starlette's adds `Vary: Origin` without one)
            if message["type"] != "http.response.start":  # Cors passes the body on as it is
                await send_out(message)
                return
            if origin is None and not any(
                    name == b"vary" for name, _ in message.get("headers", ())):
                message["headers"] = [*message.get("headers", ()), VARY_ORIGIN]
                await send_out(message)
                return
            await self.fast_cors.send(message, send_out, Headers(scope=scope))

        try:
            with bound(request_id=request_id):
                try:
                    request = Request(scope, receive)
                    try:
                        await edge(request)
                        response = await fast.endpoint(request, model)
                    except Exception as exc:  # the app's handlers for MmaError, HTTPException ...
                        handler = self._handler_for(exc)
                        if handler is None:
                            raise
                        if response_started:
                            raise RuntimeError("Caught handled exception, but response already started.") from exc
                        response = await handled(handler, request, exc)
                        exc.__traceback__ = None
                    await response(scope, receive, send_cors)
                finally:
                    observe(scope, scope["method"], status, started)
        except Exception as exc:  # ServerErrorMiddleware: the `Exception` handler, answered past the middleware
            unexpected = self.exception_handlers.get(Exception)
            if unexpected is not None:
                answer = await handled(unexpected, Request(scope), exc)
                if not response_started:
                    await answer(scope, receive, send)
            raise

    def _handler_for(self, exc: Exception) -> Handler | None:
        for cls in type(exc).__mro__:
            if cls is Exception:
                return None
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                return handler
        return None


async def handled(handler: Handler, request: Request, exc: Exception) -> Response:
    answer = handler(request, exc)
    return await answer if inspect.isawaitable(answer) else answer


def _scan(headers: list[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None, bytes | None]:
    """The first content-length, content-type and origin headers (what `Headers.get` would read)."""
    length = content_type = origin = None
    for name, value in headers:
        if name == b"content-length":
            length = value if length is None else length
        elif name == b"content-type":
            content_type = value if content_type is None else content_type
        elif name == b"origin":
            origin = value if origin is None else origin
    return length, content_type, origin


def read_body(raw: bytes, model: type[BaseModel]) -> tuple[dict[str, object], BaseModel] | None:
    """The JSON object and the route's body model, or None when FastAPI should read it itself."""
    if LONG_NUMBER.search(raw) is not None:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    try:
        return data, model.model_validate(data)
    except (ValidationError, ValueError, TypeError):  # FastAPI's path gives the answer (a 400, in its words)
        return None


def replay(messages: list[Message], receive: Receive) -> Receive:
    """`receive` that first hands back what was already read."""
    pending = list(messages)

    async def again() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return again
