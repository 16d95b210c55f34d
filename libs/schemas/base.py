"""Shared by every message: versions, ids, the base models and the bus message's msg id."""

from __future__ import annotations

import uuid
from abc import abstractmethod
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

SCHEMA_VERSION = 1
MMA_VARS_VERSION = "2025-12-19"


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


# --------------------------------------------------------------------------- base models


class Model(BaseModel):
    """Frozen, tolerant of extra fields (a newer writer never breaks an older reader)."""

    model_config = ConfigDict(frozen=True, extra="ignore")


class BusMessage(Model):
    """A message on a JetStream stream: knows its subject and its deterministic msg id."""

    schema_version: int = SCHEMA_VERSION

    @abstractmethod
    def subject(self) -> str: ...

    @abstractmethod
    def msg_id(self) -> str: ...

    def log_fields(self) -> dict[str, Any]:
        """Ids to bind to the log context while this message is handled."""
        fields: dict[str, Any] = {}
        for name in ("generation_id", "pass_id", "request_id"):
            value = getattr(self, name, None)
            if value:
                fields[name] = value
        return fields


