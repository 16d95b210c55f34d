"""Structured logging, set up once per process: JSON off a TTY, readable on one.

Events are `service.noun_verb` with snake_case fields; ids (request_id, generation_id,
pass_id) are bound with contextvars and merged into every line. Secret values are
never logged: settings hold them as `SecretStr`, and `redact_secrets` masks any
field whose name looks like a credential.
"""

from __future__ import annotations

import contextvars
import logging
import sys
from collections.abc import Mapping
from typing import Any

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from libs.settings import Settings

_SECRET_MARKERS = ("token", "secret", "password", "api_key", "authorization", "hmac")


def redact_secrets(_logger: WrappedLogger, _name: str, event_dict: EventDict) -> EventDict:
    for key in list(event_dict):
        if any(marker in key.lower() for marker in _SECRET_MARKERS):
            event_dict[key] = "***"
    return event_dict


def configure_logging(settings: Settings, service: str) -> None:
    """Configure structlog and the stdlib root logger for one service process."""
    use_json = settings.log_format == "json" or (settings.log_format == "auto" and not sys.stderr.isatty())
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    renderer: Processor = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            redact_secrets,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    logging.basicConfig(level=max(level, logging.WARNING), stream=sys.stderr, format="%(name)s %(message)s")


class bound:  # used like structlog's `bound_contextvars`
    """`structlog.contextvars.bound_contextvars` for the hot paths: a class, not a generator, and the
    variables set and reset by their tokens (structlog's reads every context variable of the task first,
    to restore the keys by value). Restores exactly what was bound before, or nothing."""

    __slots__ = ("fields", "tokens")

    def __init__(self, **fields: Any) -> None:
        self.fields = fields
        self.tokens: Mapping[str, contextvars.Token[Any]] = {}

    def __enter__(self) -> None:
        self.tokens = structlog.contextvars.bind_contextvars(**self.fields)

    def __exit__(self, *_: object) -> None:
        structlog.contextvars.reset_contextvars(**self.tokens)
