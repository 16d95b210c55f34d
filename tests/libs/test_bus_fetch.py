"""The bus's own pull fetches and durable set-up, against a real embedded NATS."""

from __future__ import annotations

import asyncio
import time

import nats.js.errors
import pytest
from nats.aio.msg import Msg
from nats.js import api

from libs.bus import Bus
from libs.bus.fetch import Fetcher
from libs.bus.pull import FILL_FROM, ensure_consumer
from libs.schemas import EVENTS_ALL, ScanLine, Stream
from tests.helpers import wait_for

DURABLE = "fetch-test"


def line(index: int) -> ScanLine:
    return ScanLine(generation_id="g-fetch", pass_id="pass:anon:t", index=index, text="hi")


def config(max_ack_pending: int) -> api.ConsumerConfig:
    return api.ConsumerConfig(durable_name=DURABLE, ack_policy=api.AckPolicy.EXPLICIT, filter_subject=EVENTS_ALL,
                              max_ack_pending=max_ack_pending, ack_wait=30)


async def fetcher(bus: Bus) -> Fetcher:
    await ensure_consumer(bus.js, Stream.EVENTS.value, config(1000))
    made = Fetcher(bus.nc, Stream.EVENTS.value, DURABLE)
    await made.start()
    return made


async def test_an_old_durable_gets_the_ack_window_asked_for_never_less(bus: Bus) -> None:
    """A durable keeps the config it was created with, but its ack window is raised in place."""
    js, stream = bus.js, Stream.EVENTS.value
    await ensure_consumer(js, stream, config(1000))  # made when missing
    assert (await js.consumer_info(stream, DURABLE)).config.max_ack_pending == 1000
    await ensure_consumer(js, stream, config(4000))
    info = await js.consumer_info(stream, DURABLE)
    assert info.config.max_ack_pending == 4000
    assert (info.config.filter_subject, info.config.ack_policy) == (EVENTS_ALL, api.AckPolicy.EXPLICIT)
    await ensure_consumer(js, stream, config(10))  # never narrowed
    assert (await js.consumer_info(stream, DURABLE)).config.max_ack_pending == 4000


def indexes(msgs: list[Msg]) -> list[int]:
    return [ScanLine.model_validate_json(m.data).index for m in msgs]


async def test_a_fetch_answers_with_what_is_there_at_once(bus: Bus) -> None:
    """A partial batch comes back without waiting out `expires`; a full one leaves the rest on the server."""
    for index in range(5):
        await bus.publish(line(index))
    pull = await fetcher(bus)
    started = time.monotonic()
    msgs, status = await pull.fetch(3, 5.0)
    assert indexes(msgs) == [0, 1, 2]
    assert status == "" and not pull.open  # the batch filled: the server sends no status
    rest: list[Msg] = []
    for _ in range(3):  # what is there, then the no-wait request's end
        msgs, status = await pull.fetch(10, 5.0)
        rest += msgs
        if status:
            break
    assert status == "404"
    assert indexes(rest) == [3, 4]
    assert time.monotonic() - started < 2.0  # neither waited for its 5 s
    assert rest[0].subject == line(0).subject() and rest[0].metadata.num_delivered == 1
    await pull.stop()


async def test_a_lingering_fetch_keeps_its_request_open_for_what_comes_next(bus: Bus) -> None:
    """With `linger`, messages that come after the fetch returned wait in hand, never more than its batch."""
    pull = await fetcher(bus)
    waiting = asyncio.create_task(pull.fetch(3, 5.0, linger=True))
    await wait_for(lambda: bool(pull.open), 5, what="the fetch's request sent")  # before the message
    await bus.publish(line(0))
    assert indexes((await asyncio.wait_for(waiting, 3.0))[0]) == [0]
    assert pull.open  # still open for two more
    for index in range(1, 5):
        await bus.publish(line(index))
    await wait_for(lambda: len(pull.got) == 2, 5, what="two more in hand without a fetch")
    assert not pull.open  # its batch of 3 is full
    msgs, _ = await pull.fetch(10, 5.0, linger=True)
    assert indexes(msgs) == [1, 2]  # in hand: no request sent
    msgs, _ = await pull.fetch(10, 5.0, linger=True)
    assert indexes(msgs) == [3, 4]  # a new request
    await pull.stop()


async def test_a_fetch_waits_for_the_first_message_or_expires_empty(bus: Bus) -> None:
    """Nothing there: the fetch returns empty when its request expires (408), or as soon as a message comes."""
    pull = await fetcher(bus)
    started = time.monotonic()
    msgs, status = await pull.fetch(10, 0.3)
    assert (msgs, status) == ([], "408")
    assert 0.25 < time.monotonic() - started < 1.2

    waiting = asyncio.create_task(pull.fetch(10, 5.0))
    await wait_for(lambda: bool(pull.open), 5, what="the fetch's request sent")  # before the message
    await bus.publish(line(7))
    msgs, _ = await asyncio.wait_for(waiting, 3.0)
    assert indexes(msgs) == [7]
    await pull.stop()


async def test_a_fetch_from_a_missing_durable_ends_with_its_status(bus: Bus) -> None:
    """No durable answers: the request ends at once with a status the pull loop pauses on, not in a loop."""
    pull = Fetcher(bus.nc, Stream.EVENTS.value, "nobody")
    await pull.start()
    with pytest.raises(nats.js.errors.NotFoundError):
        await bus.js.consumer_info(Stream.EVENTS.value, "nobody")
    msgs, status = await pull.fetch(10, 1.0)
    assert msgs == [] and status not in ("", "404", "408")
    await pull.stop()


async def test_gather_waits_for_the_batch_to_fill_or_for_its_deadline(bus: Bus) -> None:
    """Messages that come within the wait join the ones in hand; at the deadline what is there goes."""
    pull = await fetcher(bus)
    await bus.publish(line(0))
    msgs, _ = await pull.fetch(3, 5.0, linger=True)
    gathering = asyncio.create_task(pull.gather(3, asyncio.get_running_loop().time() + 60))
    for index in (1, 2, 3):
        await bus.publish(line(index))
    await asyncio.wait_for(gathering, 10)  # three in hand: no 60 s wait
    assert indexes(msgs + pull.take(3)) == [0, 1, 2, 3]

    started = time.monotonic()
    await pull.gather(3, asyncio.get_running_loop().time() + 0.3)  # nothing comes
    assert 0.25 < time.monotonic() - started < 5 and pull.take(3) == []
    await pull.stop()


async def test_a_busy_batch_consumer_waits_for_a_fuller_batch_and_a_quiet_one_does_not(bus: Bus) -> None:
    """`fill_s`: a message that comes while a batch is being handled, or after a batch of FILL_FROM or more,
    waits for more (up to the batch size or `fill_s`); one that comes to an idle consumer goes at once."""
    assert FILL_FROM == 4
    batches: list[list[int]] = []
    gate = asyncio.Event()

    async def one(msg: ScanLine, deps: None) -> None:
        raise AssertionError("every batch is handled whole")

    async def many(msgs: list[ScanLine], deps: None) -> None:
        batches.append([m.index for m in msgs])
        if msgs[0].index == 1:
            await gate.wait()

    consumer = await bus.consume_batch(stream=Stream.EVENTS, durable="filling", filter_subject=EVENTS_ALL,
                                       handlers={ScanLine: one}, batch_handler=many, deps=None, batch=4, fill_s=60.0)
    for index in (0, 1):  # idle each time: no 60 s wait
        await bus.publish(line(index))
        await wait_for(lambda i=index: batches[-1:] == [[i]], 10, what=f"message {index} handed over at once")
    await bus.publish(line(2))  # while the batch of 1 is in hand
    await wait_for(lambda: consumer.fetched == 3, 10, what="message 2 fetched while 1 is in hand")
    gate.set()
    for index in (3, 4, 5):  # one at a time: without the wait, 2 would go alone
        await bus.publish(line(index))
    await wait_for(lambda: len(batches) == 3, 10, what="the filled batch")
    assert batches[2] == [2, 3, 4, 5]
    await wait_for(lambda: consumer.handled == 6, 10, what="all acked")

    for index in (6, 7, 8, 9):  # to an idle consumer, but after a batch of four
        await bus.publish(line(index))
    await wait_for(lambda: len(batches) == 4, 10, what="the next filled batch")
    assert batches[3] == [6, 7, 8, 9]
