"""JetStream publishes written in batches on one connection, their acks awaited through one reply subscription.

nats-py's `js.publish` is a request per message: a NUID plus random token bytes (a `getrandom` call), a
future with a done callback, the headers rebuilt and checked key by key, a flush kicked, `asyncio.wait_for`
(a timer and a second future) around the answer, then the ack parsed with `json` into a dataclass. On the
bus's hot path (every event, every checkpoint) that was most of a publish's CPU. `AckMux` writes the same
HPUB commands itself, all of a batch joined into one buffer with one flush, and waits for the batch's acks
with one future and one timer; an ack is parsed with orjson. The protocol, the connection's reconnect
buffering and the errors (`nats.errors.TimeoutError`, `NoStreamResponseError`, `APIError`) are js.publish's.

One mux per connection (`mux_for`): its subscription `<inbox>.*` is made on first use and restored by
nats-py after a reconnect like any other; an answer lost meanwhile is a timeout, which callers retry.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import nats.errors
import nats.js.errors
import orjson
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api

from libs.bus.inline import subscribe_inline

STATUS = api.Header.STATUS.value
NO_RESPONDERS = "503"


LAZY_FLUSH_S = 0.005  # the longest a lazy write waits for another write to carry it


async def write(nc: NatsClient, data: bytes, lazy: bool = False) -> None:
    """Protocol commands written as they are, then the connection's flusher kicked once: the one place
    that uses nats-py's private writer (`_send_command`, `_flush_queue`, `_flush_pending`; pinned 2.16.0).

    `lazy`: no kick now; the commands leave with the next write of anyone on this connection (a
    socket write costs more than the commands), or after LAZY_FLUSH_S at the latest.
    """
    await nc._send_command(data)
    if lazy:
        asyncio.get_running_loop().call_later(LAZY_FLUSH_S, _kick, nc)
    elif nc._flush_queue is not None and nc._flush_queue.empty():
        await nc._flush_pending()


def _kick(nc: NatsClient) -> None:
    """`_flush_pending` without awaiting: what a lazy write left is written, unless written already."""
    queue = nc._flush_queue
    if nc._pending_data_size > 0 and nc.is_connected and queue is not None and queue.empty():
        queue.put_nowait(asyncio.get_running_loop().create_future())


async def ack_all(nc: NatsClient, raws: Sequence[Msg]) -> None:
    """`Msg.ack` of every message not acked yet, all in one buffer, written lazily (`write`): the
    connection's next write carries them (the consumer's next fetch request, often). Raises as
    `nc.publish` would for a connection that cannot take it (closed, draining, its reconnect buffer full)."""
    replies = [raw.reply for raw in raws if raw.reply and not raw._ackd]
    if not replies:
        return
    if nc.is_closed:
        raise nats.errors.ConnectionClosedError
    if nc.is_draining_pubs:
        raise nats.errors.ConnectionDrainingError
    data = "".join(f"PUB {reply} 0\r\n\r\n" for reply in replies).encode()
    if not nc.is_connected and (nc._max_pending_size <= 0
                                or len(data) + nc._pending_data_size > nc._max_pending_size):
        raise nats.errors.OutboundBufferLimitError
    nc.stats["out_msgs"] += len(replies)
    await write(nc, data, lazy=True)
    for raw in raws:
        raw._ackd = True


class Outgoing(NamedTuple):
    """One JetStream publish: subject, encoded header block (b"" for none), payload."""

    subject: str
    headers: bytes
    payload: bytes


def header_block(headers: dict[str, str]) -> bytes:
    """`NATS/1.0` and the headers as the HPUB command carries them (values are ours: no newlines)."""
    lines = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
    return f"NATS/1.0\r\n{lines}\r\n".encode()


def pub_ack(raw: Msg) -> api.PubAck:
    """The ack of a publish, or the error js.publish raises for that answer."""
    if raw.headers and raw.headers.get(STATUS) == NO_RESPONDERS:
        raise nats.js.errors.NoStreamResponseError
    resp = orjson.loads(raw.data)
    error = resp.get("error")
    if error is not None:
        raise nats.js.errors.APIError.from_error(error)
    return api.PubAck(stream=resp["stream"], seq=resp["seq"], domain=resp.get("domain"),
                      duplicate=resp.get("duplicate"))


class _Batch:
    """The answers of one batch, in its order (each parsed by `parse`); `done` resolves once all are in
    (or on timeout)."""

    __slots__ = ("done", "left", "parse", "results")

    def __init__(self, size: int, loop: asyncio.AbstractEventLoop, parse: Callable[[Msg], Any]) -> None:
        self.results: list[Any] = [None] * size
        self.left = size
        self.parse = parse
        self.done: asyncio.Future[list[Any]] = loop.create_future()

    def settle(self, index: int, value: Any) -> None:
        if self.results[index] is not None:
            return
        self.results[index] = value
        self.left -= 1
        if self.left == 0 and not self.done.done():
            self.done.set_result(self.results)


class AckMux:
    """Publishes with replies to `<prefix><token>`; one subscription routes every answer to its batch."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.prefix = ""
        self.waiting: dict[str, tuple[_Batch, int]] = {}
        self.tokens = itertools.count()
        self.ready: asyncio.Future[None] | None = None

    async def _subscribe(self) -> None:
        if self.ready is None:
            self.ready = asyncio.get_running_loop().create_future()
            try:
                prefix = self.nc.new_inbox() + "."
                await subscribe_inline(self.nc, prefix + "*", self._on_answer)  # settled as it is read
            except BaseException as exc:
                self.ready.set_exception(exc)
                self.ready.exception()  # retrieved here; waiters see it below
                self.ready = None
                raise
            self.prefix = prefix
            self.ready.set_result(None)
        await self.ready

    def _on_answer(self, raw: Msg) -> None:
        entry = self.waiting.pop(raw.subject[len(self.prefix):], None)
        if entry is None:
            return
        batch, index = entry
        try:
            batch.settle(index, batch.parse(raw))
        except Exception as exc:
            batch.settle(index, exc)

    async def publish(self, items: Sequence[Outgoing], timeout: float) -> list[api.PubAck | BaseException]:
        """Write every item, in order, in one buffer, then wait up to `timeout` for all acks. Each result is
        its ack or its error (raised by nobody: the caller decides); a connection that cannot take the
        write raises at once, as `nc.publish` would."""
        return await self.request(items, timeout, pub_ack)

    async def request(self, items: Sequence[Outgoing], timeout: float, parse: Callable[[Msg], Any]) -> list[Any]:
        """`publish` for any request whose answer `parse` reads (or raises for)."""
        return await (await self.send(items, timeout, parse))

    async def send(self, items: Sequence[Outgoing], timeout: float,
                   parse: Callable[[Msg], Any] = pub_ack) -> asyncio.Future[list[Any]]:
        """`request` in two parts: returns once the items are written (in order, behind everything written
        before on this connection), with a future of their answers, resolved within `timeout`. Cancelling
        the future forgets the answers still to come."""
        if not self.prefix:
            await self._subscribe()
        nc = self.nc
        if nc.is_closed:
            raise nats.errors.ConnectionClosedError
        if nc.is_draining_pubs:
            raise nats.errors.ConnectionDrainingError
        loop = asyncio.get_running_loop()
        batch = _Batch(len(items), loop, parse)
        commands: list[bytes] = []
        tokens: list[str] = []
        size = 0
        for index, (subject, headers, payload) in enumerate(items):
            if len(payload) > nc.max_payload:
                batch.settle(index, nats.errors.MaxPayloadError())
                continue
            token = format(next(self.tokens), "x")
            tokens.append(token)
            self.waiting[token] = (batch, index)
            reply = self.prefix + token
            if headers:
                commands.append(f"HPUB {subject} {reply} {len(headers)} {len(headers) + len(payload)}\r\n".encode())
                commands.append(headers)
            else:
                commands.append(f"PUB {subject} {reply} {len(payload)}\r\n".encode())
            commands.append(payload)
            commands.append(b"\r\n")
            size += len(payload)
        if not tokens:  # nothing to send (no items, or none that fit)
            if not batch.done.done():
                batch.done.set_result(batch.results)
            return batch.done
        data = b"".join(commands)
        if not nc.is_connected and (nc._max_pending_size <= 0
                                    or len(data) + nc._pending_data_size > nc._max_pending_size):
            self._forget(tokens)
            raise nats.errors.OutboundBufferLimitError
        nc.stats["out_msgs"] += len(tokens)
        nc.stats["out_bytes"] += size
        timer = loop.call_later(timeout, self._expire, batch, tokens)
        batch.done.add_done_callback(functools.partial(self._settled, batch, tokens, timer))
        try:
            await write(nc, data)
        except BaseException:
            batch.done.cancel()
            raise
        return batch.done

    def _settled(self, batch: _Batch, tokens: list[str], timer: asyncio.TimerHandle, _: object) -> None:
        timer.cancel()
        if batch.left:  # cancelled: the answers still to come are nobody's
            self._forget(tokens)

    def _forget(self, tokens: list[str]) -> None:
        for token in tokens:
            self.waiting.pop(token, None)

    def _expire(self, batch: _Batch, tokens: list[str]) -> None:
        for token in tokens:
            entry = self.waiting.pop(token, None)
            if entry is not None:
                batch.settle(entry[1], nats.errors.TimeoutError())


_MUXES: weakref.WeakKeyDictionary[NatsClient, AckMux] = weakref.WeakKeyDictionary()


def mux_for(nc: NatsClient) -> AckMux:
    """The connection's mux (made once)."""
    mux = _MUXES.get(nc)
    if mux is None:
        mux = _MUXES[nc] = AckMux(nc)
    return mux
