"""Direct gets: the last message of a subject read from a stream in one request, without the JetStream API.

`js.get_last_msg` and a KV `get` on a bucket without `allow_direct` go through `$JS.API.STREAM.MSG.GET`:
the server's API queue, an advisory per call, a JSON answer with the message base64-encoded. A direct
get (`$JS.API.DIRECT.GET.<stream>.<subject>`, streams with `allow_direct`) answers the stored message
itself, its sequence in a header; several go out in one batch through the connection's mux (acks.py).
On a replicated stream a direct get may be answered by a replica that is current, like the KV clients
of other languages read by default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import NamedTuple

import nats.js.errors
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


async def last_in(js: JetStreamContext, reads: Sequence[tuple[str, str]],
                  timeout: float = GET_TIMEOUT_S) -> list[Stored | None]:
    """`last_of` for (stream, subject) pairs of several streams, all in one batch."""
    items = [Outgoing(f"$JS.API.DIRECT.GET.{stream}.{subject}", b"", b"") for stream, subject in reads]
    results = await mux_for(js._nc).request(items, timeout, _stored)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


async def allow_direct(js: JetStreamContext, stream: str) -> None:
    """Let `stream` answer direct gets (a bucket made by an older version did not)."""
    info = await js.stream_info(stream)
    if not info.config.allow_direct:
        with contextlib.suppress(nats.js.errors.BadRequestError):
            await js.update_stream(info.config.evolve(allow_direct=True))


__all__ = ["Stored", "allow_direct", "last_in", "last_of"]
