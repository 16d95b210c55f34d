"""`GET /mma/stream/{id}`: one generation's EVENTS subject as server-sent events.

Every event carries `id:` = its stream sequence, so a reconnect with `Last-Event-ID`
resumes right after it (no repeats) and a reconnect without it replays everything
said so far. The stream closes right after a terminal event.

Streams do not open a consumer each: they replay with one batched get, then share the
gateway's one live subscription (`services.gateway.adapters.fanout`). `SseStream` is its
own ASGI response, built for thousands of open streams on one process: one coroutine per
stream (plus one parked on `receive` to hear a hang-up), no timer of its own (the fan-out's
ticker wakes it for a keepalive or a queue update), each event encoded once however many
streams write it, and everything that arrived since the last write sent as one chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Mapping

import orjson
import structlog
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from libs.bus import Bus
from libs.errors import NotFoundError
from libs.final import final_end
from libs.schemas import (
    BusMessage,
    GenerationAccepted,
    GenerationDone,
    GenerationFailed,
    GenerationRejected,
    GenerationView,
    GetGeneration,
    MmaStatus,
    ScanLine,
    StatusChanged,
)
from services.gateway.adapters.fanout import Delivery, Fanout, Watch
from services.gateway.generations.control import queue_info
from services.gateway.generations.views import as_dict

log = structlog.get_logger("gateway")

TERMINAL_STATES = {s.value for s in MmaStatus if s.is_terminal}
QUEUE_EVERY_S = 2.0
PING = b": ping\r\n\r\n"
HEADERS = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache"),
           (b"x-accel-buffering", b"no")]


def _event(name: str, data: Mapping[str, object], seq: int | None) -> bytes:
    head = b"id: %d\r\n" % seq if seq is not None else b""
    return b"%sevent: %s\r\ndata: %s\r\n\r\n" % (head, name.encode(), orjson.dumps(data))


def to_sse(seq: int, msg: BusMessage) -> tuple[bytes, bool]:
    """The SSE events of one bus message, and whether the stream ends after them."""
    if isinstance(msg, ScanLine):
        return _event("scan_line", {"index": msg.index, "text": msg.text}, seq), False
    if isinstance(msg, StatusChanged):
        return _event("status", {"status": msg.status.value}, seq), False
    if isinstance(msg, GenerationAccepted):
        return _event("status", {"status": MmaStatus.QUEUED.value}, seq), False
    if isinstance(msg, GenerationDone):
        return _event("done", {"status": msg.status.value, "output_url": msg.output_url}, seq), True
    if isinstance(msg, GenerationFailed):
        out = _event("error", {"status": msg.status.value, "error": msg.code, "code": msg.code,
                               "message": msg.message, "step": msg.step_type}, seq)
        if msg.status is MmaStatus.CANCELLED:
            out += _event("cancelled", {"status": msg.status.value}, seq)
        return out, True
    if isinstance(msg, GenerationRejected):
        return _event("error", {"status": "error", "error": msg.code, "code": msg.code, "message": msg.message,
                                "step": None, "balance": msg.balance, "needed": msg.price}, seq), True
    return b"", False


def _moved_on(msg: BusMessage) -> bool:
    """A status past `queued`, or the end: the generation is no longer waiting in line."""
    if isinstance(msg, StatusChanged):
        return msg.status is not MmaStatus.QUEUED
    return isinstance(msg, GenerationDone | GenerationFailed | GenerationRejected)


def parse_last_event_id(value: str | None) -> int:
    try:
        return max(0, int((value or "0").strip()))
    except ValueError:
        return 0


def _from_ledger(view: GenerationView) -> bytes:
    """A generation whose events aged out of the stream: what the ledger kept of it."""
    messages = as_dict(view.vars.get("userMessages"))
    out = [_event("scan_line", {"index": index, "text": str(line.get("text") if isinstance(line, dict) else line)},
                  None) for index, line in enumerate(messages.get("scan_lines") or [])]
    if view.status in ("done", "suggested"):
        out.append(_event("done", {"status": view.status}, None))
    elif view.status in ("error", "cancelled"):
        out.append(_event("error", {"status": view.status, "error": "GENERATION_FAILED",
                                    "message": view.error or "Something went wrong.", "code": "GENERATION_FAILED",
                                    "step": None}, None))
        if view.status == "cancelled":
            out.append(_event("cancelled", {"status": view.status}, None))
    else:
        out.append(_event("status", {"status": view.status}, None))
    return b"".join(out)


async def _terminal_seq(bus: Bus, generation_id: str) -> int:
    """Where the stream ended: the first end (libs/final.py), or the rejection; 0 while it runs.
    A late `failed` after it is never streamed, not even to a client reconnecting after the end."""
    end = await final_end(bus, generation_id)
    seqs = [seq for seq in (end[0] if end else 0, await bus.last_seq(f"mma.evt.{generation_id}.rejected")) if seq]
    return min(seqs, default=0)


class SseStream(Response):
    """Replay (after `last_event_id`), then live, closing after the terminal event.

    While the generation is queued, its `status: queued` event carries `queue: {position,
    estimate_s}`, and a `queue` event (no id: it is not in the stream) repeats it whenever
    nothing else was said for `QUEUE_EVERY_S`. A comment line keeps an idle stream open
    every `ping_s`.
    """

    media_type = "text/event-stream"

    def __init__(self, bus: Bus, fanout: Fanout, generation_id: str, last_event_id: int, *, ping_s: float,
                 queue_window: int = 20) -> None:
        self.bus, self.fanout, self.generation_id = bus, fanout, generation_id
        self.last_event_id, self.ping_s, self.queue_window = last_event_id, ping_s, queue_window
        self.status_code = 200
        self.background = None
        self.raw_headers = list(HEADERS)
        self.watch: Watch | None = None
        self.gone = False
        self.queued = True  # until a status beyond `queued` (or the end) is seen
        self.wrote_at = self.said_at = time.monotonic()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start = {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        if scope["method"] == "HEAD":
            await send(start)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return
        hangup = asyncio.ensure_future(self._hear_hangup(receive))
        started = False
        try:
            # the head goes with the first chunk (an empty one once the replay is in hand): a replay that
            # fails (NATS away) is still an error answer (503), not a stream cut short
            async with contextlib.aclosing(self.chunks()) as chunks:
                async for chunk in chunks:
                    if not started:
                        await send(start)
                        started = True
                    if chunk:
                        await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if not started:
                await send(start)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            hangup.cancel()
            if self.watch is not None:
                self.fanout.unregister(self.watch)

    async def _hear_hangup(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        if self.watch is not None:
            self.watch.close()

    def _written(self, said: bool) -> None:
        self.wrote_at = now = time.monotonic()
        if said:
            self.said_at = now
        self._arm()

    def _arm(self) -> None:
        """Ask the fan-out's ticker for a wake-up when a keepalive or a queue update falls due."""
        if self.watch is not None:
            due = self.wrote_at + self.ping_s
            self.watch.deadline = min(due, self.said_at + QUEUE_EVERY_S) if self.queued else due

    async def _encode(self, batch: list[Delivery]) -> tuple[bytes, bool]:
        """One chunk for the batch, up to and including a terminal event (and whether there was one)."""
        out: list[bytes] = []
        for index, delivery in enumerate(batch):
            msg = delivery.msg
            if isinstance(msg, StatusChanged) and msg.status is not MmaStatus.QUEUED:
                self.queued = False
            if isinstance(msg, GenerationAccepted):  # the `queued` status carries the place in line
                later = any(_moved_on(d.msg) for d in batch[index + 1:])
                queue = None if later else await queue_info(self.bus, self.generation_id, self.queue_window)
                if queue is not None:
                    out.append(_event("status", {"status": MmaStatus.QUEUED.value, "queue": queue}, delivery.seq))
                    continue
            if delivery.sse is None:
                delivery.sse, final = to_sse(delivery.seq, msg)
            else:
                final = isinstance(msg, GenerationDone | GenerationFailed | GenerationRejected)
            out.append(delivery.sse)
            if final:
                log.debug("gateway.sse_closed", generation_id=self.generation_id, stream_seq=delivery.seq)
                return b"".join(out), True
        return b"".join(out), False

    async def _idle(self) -> bytes:
        """Woken with nothing new: a queue update when due, else a keepalive when due."""
        now = time.monotonic()
        if self.queued and now - self.said_at >= QUEUE_EVERY_S * 0.95:
            queue = await queue_info(self.bus, self.generation_id, self.queue_window)
            self.said_at = now  # asked: the next ask is due QUEUE_EVERY_S from now, said or not
            if queue is not None:
                return _event("queue", queue, None)
        if now - self.wrote_at >= self.ping_s * 0.95:
            return PING
        return b""

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        generation_id, after = self.generation_id, self.last_event_id
        if after > 0:
            terminal = await _terminal_seq(self.bus, generation_id)
            if 0 < terminal <= after:
                return  # the client already saw the end
        self.watch, replayed = await self.fanout.open(generation_id, after)
        batch: list[Delivery] | None = replayed
        if self.gone:
            return
        yield b""  # the head may go
        if after == 0 and not replayed:  # nothing in the stream: aged out, or never there
            try:
                view = await self.bus.request(GetGeneration(generation_id=generation_id), GenerationView)
            except NotFoundError:
                yield _event("error", {"status": "error", "error": "NOT_FOUND", "code": "NOT_FOUND",
                                       "message": "Unknown generation.", "step": None}, None)
                return
            yield _from_ledger(view)
            if view.status in TERMINAL_STATES:
                return
        self._written(said=True)
        while batch is not None:
            if batch:
                chunk, final = await self._encode(batch)
                if chunk:
                    yield chunk
                    self._written(said=True)
                if final:
                    return
            else:
                chunk = await self._idle()
                if chunk:
                    yield chunk
                    self._written(said=chunk != PING)
                else:
                    self._arm()
            batch = await self.watch.next()
