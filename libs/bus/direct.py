"""Direct gets: the last message of a subject read from a stream in one request, without the JetStream API.

`js.get_last_msg` and a KV `get` on a bucket without `allow_direct` go through `$JS.API.STREAM.MSG.GET`:
the server's API queue, an advisory per call, a JSON answer with the message base64-encoded. A direct
get (`$JS.API.DIRECT.GET.<stream>.<subject>`, streams with `allow_direct`) answers the stored message
itself, its sequence in a header; several go out in one batch through the connection's mux (acks.py).
On a replicated stream a direct get may be answered by a replica that is current, like the KV clients
of other languages read by default. A read that must see everything acked so far (a cancel request
left in the stream) asks the leader through the API (`Read(..., leader=True)`), in the same batch.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Sequence
from typing import NamedTuple

import nats.js.errors
import orjson
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from libs.bus.acks import STATUS, Outgoing, mux_for

GET_TIMEOUT_S = 5.0
NOT_FOUND = "404"
DELETED = ("DEL", "PURGE")


class Stored(NamedTuple):
    """The last message of a subject: its data, its stream sequence (a KV revision), and whether it is a
    KV delete or purge marker (no value)."""

    data: bytes
    seq: int
    deleted: bool


class Read(NamedTuple):
    """The last message of `subject` in `stream`; with `leader`, through the JetStream API (answered by the
    stream's leader, never by a replica behind it)."""

    stream: str
    subject: str
    leader: bool = False

    def outgoing(self) -> Outgoing:
        if self.leader:
            return Outgoing(f"$JS.API.STREAM.MSG.GET.{self.stream}", b"", orjson.dumps({"last_by_subj": self.subject}))
        return Outgoing(f"$JS.API.DIRECT.GET.{self.stream}.{self.subject}", b"", b"")


def _from_api(raw: Msg) -> Stored | None:
    """The API's answer (`js.get_last_msg`): JSON, the message base64-encoded; 404 is no message."""
    headers = raw.headers or {}
    if headers.get(STATUS):
        raise nats.js.errors.APIError(code=int(headers[STATUS]), description=headers.get("Description"))
    answer = orjson.loads(raw.data)
    error = answer.get("error")
    if error is not None:
        if error.get("code") == int(NOT_FOUND):
            return None
        raise nats.js.errors.APIError.from_error(error)
    message = answer["message"]
    return Stored(base64.b64decode(message.get("data") or ""), int(message.get("seq") or 0), False)


def _stored(raw: Msg) -> Stored | None:
    headers = raw.headers or {}
    status = headers.get(STATUS)
    if status == NOT_FOUND:
        return None
    if status:
        raise nats.js.errors.APIError(code=int(status), description=headers.get("Description"))
    return Stored(raw.data, int(headers.get("Nats-Sequence") or 0), headers.get("KV-Operation") in DELETED)


async def last_of(js: JetStreamContext, stream: str, subjects: Sequence[str],
                  timeout: float = GET_TIMEOUT_S) -> list[Stored | None]:
    """The last message of each subject (None: none), read together; the first failure is raised
    (`NoRespondersError`-like trouble as nats-py's TimeoutError / APIError)."""
    return await last_in(js, [(stream, subject) for subject in subjects], timeout)


async def last_in(js: JetStreamContext, reads: Sequence[tuple[str, str] | Read],
                  timeout: float = GET_TIMEOUT_S) -> list[Stored | None]:
    """`last_of` for reads of several streams, all in one batch; a (stream, subject) pair is a direct get."""
    asked = [read if isinstance(read, Read) else Read(*read) for read in reads]
    answers = await mux_for(js._nc).request([read.outgoing() for read in asked], timeout, _raw)
    results: list[Stored | None] = []
    for read, answer in zip(asked, answers, strict=True):
        if isinstance(answer, BaseException):
            raise answer
        results.append(_from_api(answer) if read.leader else _stored(answer))
    return results


def _raw(raw: Msg) -> Msg:
    return raw


async def allow_direct(js: JetStreamContext, stream: str) -> None:
    """Let `stream` answer direct gets (a bucket made by an older version did not)."""
    info = await js.stream_info(stream)
    if not info.config.allow_direct:
        with contextlib.suppress(nats.js.errors.BadRequestError):
            await js.update_stream(info.config.evolve(allow_direct=True))


__all__ = ["Read", "Stored", "allow_direct", "last_in", "last_of"]
