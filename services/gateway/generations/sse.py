"""`GET /mma/stream/{id}`: one generation's EVENTS subject as server-sent events.

Every event carries `id:` = its stream sequence, so a reconnect with `Last-Event-ID`
resumes right after it (no repeats) and a reconnect without it replays everything
said so far. The stream closes right after a terminal event.

Streams do not open a consumer each: they replay with message gets, then share the
gateway's one live subscription (`services.gateway.adapters.fanout`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

import orjson
import structlog
from sse_starlette import ServerSentEvent

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
    generation_events,
)
from services.gateway.adapters.fanout import Fanout
from services.gateway.generations.control import queue_info
from services.gateway.generations.views import as_dict

log = structlog.get_logger("gateway")

TERMINAL_STATES = {s.value for s in MmaStatus if s.is_terminal}
QUEUE_EVERY_S = 2.0


def _event(name: str, data: Mapping[str, object], seq: int | None) -> ServerSentEvent:
    return ServerSentEvent(data=orjson.dumps(data).decode(), event=name, id=str(seq) if seq is not None else None)


def to_sse(seq: int, msg: BusMessage) -> tuple[list[ServerSentEvent], bool]:
    """The SSE events of one bus message, and whether the stream ends after them."""
    if isinstance(msg, ScanLine):
        return [_event("scan_line", {"index": msg.index, "text": msg.text}, seq)], False
    if isinstance(msg, StatusChanged):
        return [_event("status", {"status": msg.status.value}, seq)], False
    if isinstance(msg, GenerationAccepted):
        return [_event("status", {"status": MmaStatus.QUEUED.value}, seq)], False
    if isinstance(msg, GenerationDone):
        return [_event("done", {"status": msg.status.value, "output_url": msg.output_url}, seq)], True
    if isinstance(msg, GenerationFailed):
        events = [_event("error", {"status": msg.status.value, "error": msg.code, "code": msg.code,
                                   "message": msg.message, "step": msg.step_type}, seq)]
        if msg.status is MmaStatus.CANCELLED:
            events.append(_event("cancelled", {"status": msg.status.value}, seq))
        return events, True
    if isinstance(msg, GenerationRejected):
        return [_event("error", {"status": "error", "error": msg.code, "code": msg.code, "message": msg.message,
                                 "step": None, "balance": msg.balance, "needed": msg.price}, seq)], True
    return [], False


def parse_last_event_id(value: str | None) -> int:
    try:
        return max(0, int((value or "0").strip()))
    except ValueError:
        return 0


async def _from_ledger(view: GenerationView) -> AsyncIterator[ServerSentEvent]:
    """A generation whose events aged out of the stream: what the ledger kept of it."""
    messages = as_dict(view.vars.get("userMessages"))
    for index, line in enumerate(messages.get("scan_lines") or []):
        text = line.get("text") if isinstance(line, dict) else line
        yield _event("scan_line", {"index": index, "text": str(text)}, None)
    if view.status in ("done", "suggested"):
        yield _event("done", {"status": view.status}, None)
    elif view.status in ("error", "cancelled"):
        yield _event("error", {"status": view.status, "error": "GENERATION_FAILED",
                               "message": view.error or "Something went wrong.", "code": "GENERATION_FAILED",
                               "step": None}, None)
        if view.status == "cancelled":
            yield _event("cancelled", {"status": view.status}, None)
    else:
        yield _event("status", {"status": view.status}, None)


async def _terminal_seq(bus: Bus, generation_id: str) -> int:
    """Where the stream ended: the first end (libs/final.py), or the rejection; 0 while it runs.
    A late `failed` after it is never streamed, not even to a client reconnecting after the end."""
    end = await final_end(bus, generation_id)
    seqs = [seq for seq in (end[0] if end else 0, await bus.last_seq(f"mma.evt.{generation_id}.rejected")) if seq]
    return min(seqs, default=0)


async def stream_generation(bus: Bus, fanout: Fanout, generation_id: str, last_event_id: int,
                            queue_window: int = 20) -> AsyncIterator[ServerSentEvent]:
    """Replay (after `last_event_id`), then live, closing after the terminal event.

    While the generation is queued, its `status: queued` event carries `queue: {position,
    estimate_s}`, and a `queue` event (no id: it is not in the stream) repeats it whenever
    nothing else was said for `QUEUE_EVERY_S`.
    """
    if last_event_id > 0:
        terminal = await _terminal_seq(bus, generation_id)
        if 0 < terminal <= last_event_id:
            return  # the client already saw the end
    if last_event_id == 0 and await bus.last_seq(generation_events(generation_id)) == 0:
        try:
            view = await bus.request(GetGeneration(generation_id=generation_id), GenerationView)
        except NotFoundError:
            yield _event("error", {"status": "error", "error": "NOT_FOUND", "code": "NOT_FOUND",
                                   "message": "Unknown generation.", "step": None}, None)
            return
        async for event in _from_ledger(view):
            yield event
        if view.status in TERMINAL_STATES:
            return
    async with contextlib.aclosing(fanout.follow(generation_id, last_event_id)) as events:
        queued = True  # until a status beyond `queued` (or the end) is seen
        next_msg: asyncio.Future[tuple[int, BusMessage]] = asyncio.ensure_future(anext(events))
        try:
            while True:
                done, _ = await asyncio.wait({next_msg}, timeout=QUEUE_EVERY_S if queued else None)
                if not done:  # nothing said for a while: tell a queued generation where it stands
                    queue = await queue_info(bus, generation_id, queue_window)
                    if queue is not None:
                        yield _event("queue", queue, None)
                    continue
                seq, msg = next_msg.result()
                next_msg = asyncio.ensure_future(anext(events))
                out, is_final = to_sse(seq, msg)
                if isinstance(msg, StatusChanged) and msg.status is not MmaStatus.QUEUED:
                    queued = False
                if isinstance(msg, GenerationAccepted):  # the `queued` status carries the place in line
                    queue = await queue_info(bus, generation_id, queue_window)
                    if queue is not None:
                        out = [_event("status", {"status": MmaStatus.QUEUED.value, "queue": queue}, seq)]
                for event in out:
                    yield event
                if is_final:
                    log.debug("gateway.sse_closed", generation_id=generation_id, stream_seq=seq)
                    return
        finally:
            next_msg.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await next_msg
