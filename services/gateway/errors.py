"""One place turning errors into bodies, in the shape of the route that failed.

Legacy routes: `{ok:false, error, message, requestId}`. MMA routes (`/mma/...`):
`{error, message, details?, status:"error", error_detail:{code, message, step}}`.
Validation errors are 400 in those shapes (never FastAPI's 422 body), an unexpected
exception is a 500 with the route's failure code, never a traceback; a dependency not
answering (a service or NATS restarting) is a 503 with `Retry-After`, never a 500.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from libs.errors import MmaError, ServiceUnavailableError
from libs.transient import NATS_AWAY

log = structlog.get_logger("gateway")

_HTTP_CODES = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 413: "PAYLOAD_TOO_LARGE", 401: "Unauthorized",
               403: "FORBIDDEN", 400: "BAD_REQUEST"}


def is_mma_path(path: str) -> bool:
    return path.startswith("/mma/")


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", "") or "")


def legacy_body(code: str, message: str, request_id: str, **extra: object) -> dict[str, object]:
    return {"ok": False, "error": code, "message": message, "requestId": request_id, **extra}


def mma_body(code: str, message: str, details: Mapping[str, object] | None = None, step: str | None = None,
             **extra: object) -> dict[str, object]:
    body: dict[str, object] = {"error": code, "message": message}
    if details:
        body["details"] = details
    body.update(status="error", error_detail={"code": code, "message": message, "step": step}, **extra)
    return body


def error_response(path: str, status: int, code: str, message: str, request_id: str,
                   details: Mapping[str, object] | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    """The error body a route at `path` documents for `code`."""
    body = mma_body(code, message, details) if is_mma_path(path) else legacy_body(code, message, request_id)
    return JSONResponse(body, status_code=status, headers=headers)


STACK_FRAMES = 8
RETRY_AFTER_S = 2
# raised by direct JetStream reads (stream gets, consumer info) while NATS reconnects
UNAVAILABLE = NATS_AWAY


def short_stack(exc: BaseException, frames: int = STACK_FRAMES) -> list[str]:
    """`file:line in function` of the innermost frames, read from the traceback alone.

    `log.exception` formats the whole chain and, on Python 3.11+, re-reads and parses
    the source of every frame for its caret positions: under a failure storm that
    formatting was most of the gateway's CPU (docs/bench.md). File, line and name are
    enough to find the fault.
    """
    summary = traceback.StackSummary.extract(traceback.walk_tb(exc.__traceback__), limit=-frames,
                                             lookup_lines=False)
    return [f"{frame.filename}:{frame.lineno} in {frame.name}" for frame in summary]


def _describe(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    return "; ".join(parts) or "Invalid request."


async def on_mma_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, MmaError)
    status = exc.http_status
    code = exc.instance_code
    if status >= 500:
        log.warning("gateway.request_failed", code=code, error=exc.message, path=request.url.path)
        code = getattr(request.state, "failure_code", None) or code
    headers = None
    if status == 429 and "retry_after" in exc.details:
        headers = {"Retry-After": str(exc.details["retry_after"])}
    if status == 503:  # a dependency is restarting or slow: the client may retry shortly
        headers = {"Retry-After": str(exc.details.get("retry_after") or RETRY_AFTER_S)}
    if status == 429:  # the rate limit answers in the legacy shape on every route
        return JSONResponse(legacy_body(code, exc.message, request_id_of(request)), status_code=429,
                            headers=headers)
    details = {k: v for k, v in exc.details.items() if k != "retry_after"} or None
    return error_response(request.url.path, status, code, exc.message, request_id_of(request), details,
                          headers)


async def on_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    code = getattr(request.state, "invalid_code", None) or "INVALID_INPUT"
    return error_response(request.url.path, 400, code, _describe(exc), request_id_of(request))


async def on_http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "HTTP_ERROR")
    message = str(exc.detail) if exc.detail else code
    return error_response(request.url.path, exc.status_code, code, message, request_id_of(request),
                          headers=dict(exc.headers or {}))


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, UNAVAILABLE):  # NATS itself not answering for a moment: a 503 like any dependency
        return await on_mma_error(request, ServiceUnavailableError(f"the bus is not answering: {exc!r}"))
    log.error("gateway.unhandled_exception", path=request.url.path, error=repr(exc), stack=short_stack(exc))
    code = getattr(request.state, "failure_code", None) or "INTERNAL_ERROR"
    return error_response(request.url.path, 500, code, "Something went wrong on our side.",
                          request_id_of(request))


def install(app: FastAPI) -> None:
    """The handlers above on the app (`services.gateway.fastpath` calls the same ones)."""
    app.add_exception_handler(MmaError, on_mma_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)
