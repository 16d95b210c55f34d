"""One error tree with codes: the gateway turns them into bodies, the bus into nak or term.

`code` is the string the frontend reads (ROUTES.md), `http_status` the status the
gateway answers, `retryable` whether a bus handler should be redelivered.
"""

from __future__ import annotations

from typing import Any, ClassVar, TypedDict

from pydantic import JsonValue


class WireError(TypedDict):
    """An error in a request/reply answer (`error_from_wire` rebuilds the exception)."""

    type: str
    code: str
    message: str
    details: dict[str, JsonValue]


class MmaError(Exception):
    code: ClassVar[str] = "INTERNAL_ERROR"
    http_status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False

    def __init__(self, message: str | None = None, *, code: str | None = None, **details: JsonValue) -> None:
        self.message = message or self.code
        self.instance_code = code or self.code
        self.details = details
        super().__init__(self.message)

    def to_wire(self) -> WireError:
        """The error as carried in a request/reply answer."""
        return {"type": type(self).__name__, "code": self.instance_code, "message": self.message,
                "details": self.details}


class InvalidInputError(MmaError):
    code = "INVALID_INPUT"
    http_status = 400


class NotFoundError(MmaError):
    code = "NOT_FOUND"
    http_status = 404


class ConflictError(MmaError):
    code = "CONFLICT"
    http_status = 409


class UnauthorizedError(MmaError):
    code = "Unauthorized"
    http_status = 401


class ForbiddenError(MmaError):
    code = "FORBIDDEN"
    http_status = 403


class RateLimitedError(MmaError):
    code = "RATE_LIMITED"
    http_status = 429


class InvalidMessageError(MmaError):
    """A bus payload that cannot be decoded: never retried, dead-lettered."""

    code = "INVALID_MESSAGE"


class ServiceUnavailableError(MmaError):
    """A dependency (bus, ledger, database) is not answering right now: retry later."""

    code = "SERVICE_UNAVAILABLE"
    http_status = 503
    retryable = True


class ProviderError(MmaError):
    """A model provider failed; `retryable` is decided per instance (5xx/timeouts yes, 4xx no)."""

    code = "PROVIDER_ERROR"
    http_status = 502

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        provider_http_status: int | None = None,
        is_retryable: bool = False,
        **details: JsonValue,
    ) -> None:
        super().__init__(message, code=code, **details)
        self.provider_http_status = provider_http_status
        self.is_retryable = is_retryable


class GptSchemaError(ProviderError):
    code = "GPT_SCHEMA_ERROR"


class ConfigError(MmaError):
    code = "CONFIG_ERROR"


ERROR_TYPES: dict[str, type[MmaError]] = {
    cls.__name__: cls
    for cls in (
        MmaError, InvalidInputError, NotFoundError, ConflictError, UnauthorizedError, ForbiddenError,
        RateLimitedError, InvalidMessageError, ServiceUnavailableError,
        ProviderError, GptSchemaError, ConfigError,
    )
}


def error_from_wire(data: dict[str, Any]) -> MmaError:
    """Rebuild the error a remote service raised, so callers catch the same classes."""
    cls = ERROR_TYPES.get(str(data.get("type")), MmaError)
    details = data.get("details") or {}
    return cls(str(data.get("message") or ""), code=str(data.get("code") or cls.code), **details)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ProviderError):
        return exc.is_retryable
    if isinstance(exc, MmaError):
        return exc.retryable
    return True
