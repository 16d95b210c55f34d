"""Typed messages to bytes and headers, and back: the type header names the model to decode."""

from __future__ import annotations

from nats.aio.msg import Msg
from pydantic import ValidationError

from libs.errors import InvalidMessageError
from libs.schemas import MESSAGE_TYPES, TYPE_HEADER, BusMessage

MSG_ID_HEADER = "Nats-Msg-Id"


def encode(msg: BusMessage) -> tuple[bytes, dict[str, str]]:
    """The payload and headers of a publish: the msg id the server dedupes on, the type readers decode by."""
    return msg.model_dump_json().encode(), {MSG_ID_HEADER: msg.msg_id(), TYPE_HEADER: type(msg).__name__}


def decode(raw: Msg, default: type[BusMessage] | None = None) -> BusMessage:
    """The typed message of a raw JetStream message; InvalidMessageError when impossible."""
    type_name = (raw.headers or {}).get(TYPE_HEADER)
    model = MESSAGE_TYPES.get(type_name) if type_name else default
    if model is None:
        raise InvalidMessageError(f"unknown message type {type_name!r} on {raw.subject}")
    try:
        return model.model_validate_json(raw.data)
    except ValidationError as exc:
        raise InvalidMessageError(f"invalid {model.__name__} on {raw.subject}: {exc.error_count()} errors") from exc
