"""Subscriptions whose messages are handled as the connection reads them, not a loop turn later.

nats-py hands every message of a callback subscription to the subscription's own task through
an `asyncio.Queue`: the reader puts it, the task wakes on a later turn of the event loop, gets
it, awaits the callback. For the bus's own hot subscriptions (publish acks, fetched messages,
request replies, broadcasts, RPC requests) the handler only resolves a future, appends to a list
or starts a task, so that hand-off is pure delay: under load each loop turn is every ready
callback of the process, and a create crossed several such hand-offs in the gateway, billing
and the ledger (docs/bench.md, session 13). `subscribe_inline` swaps the subscription's pending
queue for `_Inline`, which runs a plain (not async) handler at once, inside the reader.

A handler must not block or await: it runs in the connection's read loop. One that raises is
logged and the next message is read as usual. This uses nats-py's private members (pinned 2.16.0,
as in acks.py): `Subscription._pending_queue`, `_pending_size`, `_wait_for_msgs_task`, and for the
request replies `Client._resp_sub_prefix`, `_init_request_sub`, `_resp_map`, `_subs`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

log = structlog.get_logger("bus")

Handler = Callable[[Msg], None]


class _Inline:
    """What nats-py uses of a subscription's pending queue, with nothing pending but what the handler
    keeps waiting itself (`pending`: `Subscription.pending_msgs` reports it)."""

    __slots__ = ("handler", "pending", "sub")

    def __init__(self, sub: Subscription, handler: Handler, pending: Callable[[], int] | None = None) -> None:
        self.sub = sub
        self.handler = handler
        self.pending = pending

    def put_nowait(self, msg: Msg) -> None:
        self.sub._pending_size -= len(msg.data)  # counted by the reader as if it were queued
        try:
            self.handler(msg)
        except Exception:  # the reader must go on whatever one message did
            log.exception("bus.inline_handler_failed", subject=msg.subject)

    def qsize(self) -> int:
        return self.pending() if self.pending is not None else 0

    def empty(self) -> bool:
        return self.qsize() == 0

    def task_done(self) -> None:
        return None

    async def join(self) -> None:  # `Subscription.drain` waits for the queue to empty: it always is
        return None


async def subscribe_inline(nc: NatsClient, subject: str, handler: Handler, queue: str = "",
                           pending: Callable[[], int] | None = None) -> Subscription:
    """`nc.subscribe` with `handler` run in the reader for each message (no task, no queue); `pending`
    counts the messages the handler keeps waiting, if it keeps any."""
    sub = await nc.subscribe(subject, queue=queue)  # no callback: nats-py starts no task for it
    _make_inline(sub, handler, pending)
    return sub


def _make_inline(sub: Subscription, handler: Handler, pending: Callable[[], int] | None = None) -> None:
    """Swap `sub`'s pending queue for `_Inline`; a message queued before the swap is handled first."""
    before = sub._pending_queue
    inline = _Inline(sub, handler, pending)
    sub._pending_queue = inline  # type: ignore[assignment]  # duck-typed: what nats-py calls of it
    if isinstance(before, asyncio.Queue):
        while not before.empty():
            msg = before.get_nowait()
            sub._pending_size += len(msg.data)  # `put_nowait` takes it off again
            inline.put_nowait(msg)


async def inline_request_replies(nc: NatsClient) -> None:
    """nats-py's reply subscription for `nc.request` (made now if not yet), its replies handed over inline."""
    if nc._resp_sub_prefix is None:
        await nc._init_request_sub()
    subject = nc._resp_sub_prefix.decode() + "*"  # type: ignore[union-attr]  # set just above
    offset = len(nc._resp_sub_prefix)  # type: ignore[arg-type]

    def on_reply(msg: Msg) -> None:
        future = nc._resp_map.get(msg.subject[offset:])
        if future is not None and not future.done():
            future.set_result(msg)

    for sub in list(nc._subs.values()):
        if sub.subject == subject and not isinstance(sub._pending_queue, _Inline):
            if sub._wait_for_msgs_task is not None:
                sub._wait_for_msgs_task.cancel()  # its callback task: nothing reaches it any more
                sub._wait_for_msgs_task = None
            _make_inline(sub, on_reply)
