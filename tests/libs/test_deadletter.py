"""Poison messages end, against a real NATS: bounded deliveries, the retained dead-letter stream, the RPC edge."""

from __future__ import annotations

import pytest

from libs import deadletter
from libs.bus import Bus
from libs.errors import MmaError, ServiceUnavailableError, is_retryable
from libs.schemas import (
    DEAD_LETTER_SUBJECT,
    TYPE_HEADER,
    CustomerView,
    DeadLettered,
    GetCustomer,
    ScanLine,
    Stream,
)
from libs.settings import Settings
from tests.helpers import wait_for


def line(gen: str, index: int, text: str = "hello") -> ScanLine:
    return ScanLine(generation_id=gen, pass_id="pass:anon:t", index=index, text=text)


async def dead_letters(bus: Bus, consumer: str | None = None) -> list[deadletter.DeadLetter]:
    return await deadletter.waiting(bus.js, deadletter.filter_for(consumer))


async def test_a_plain_bug_is_retried_up_to_the_bound_then_kept_with_why(bus: Bus) -> None:
    """A handler that raises a plain exception is delivered max_deliveries times, reported once, then kept."""
    calls: list[str] = []
    exhausted: list[str] = []
    reports: list[DeadLettered] = []

    async def buggy(msg: ScanLine, deps: None) -> None:
        calls.append(msg.generation_id)
        if msg.generation_id == "poison":
            raise KeyError("a bug")

    async def on_exhausted(msg: ScanLine, exc: BaseException, deps: None) -> None:
        exhausted.append(f"{msg.generation_id}:{type(exc).__name__}")

    async def on_report(msg: DeadLettered, deps: None) -> None:
        reports.append(msg)

    consumer = await bus.consume(stream=Stream.EVENTS, durable="buggy", filter_subject="mma.evt.*.scan_line",
                                 handlers={ScanLine: buggy}, deps=None, on_exhausted=on_exhausted)
    await bus.consume(stream=Stream.EVENTS, durable="reports", filter_subject=DEAD_LETTER_SUBJECT,
                      handlers={DeadLettered: on_report}, deps=None)
    await bus.publish(line("poison", 0))
    await bus.publish(line("fine", 0))
    await wait_for(lambda: reports, timeout=20, what="the dead-letter report")
    assert calls.count("poison") == 3 and calls.count("fine") == 1
    assert exhausted == ["poison:KeyError"]
    await wait_for(lambda: consumer.handled == 1, timeout=5, what="the good message acked")

    [kept] = await dead_letters(bus, "buggy")
    assert kept.consumer == "buggy" and kept.subject == "mma.evt.poison.scan_line"
    assert kept.deliveries == 3 and kept.reason.startswith("KeyError")
    assert kept.type_name == "ScanLine" and ScanLine.model_validate_json(kept.data).generation_id == "poison"
    assert kept.stream == Stream.EVENTS.value and kept.stream_seq == 1
    assert reports[0].consumer == "buggy" and reports[0].dead_letter_seq == kept.seq
    assert await deadletter.counts(bus.js) == {"buggy": 1}


async def test_a_poison_message_in_a_batch_does_not_take_the_batch_with_it(bus: Bus) -> None:
    """The batch falls back to one by one: every other message is handled and acked, only the bug is kept."""
    batches: list[int] = []
    handled: list[int] = []

    async def one(msg: ScanLine, deps: None) -> None:
        if msg.text == "poison":
            raise ZeroDivisionError("a bug")
        handled.append(msg.index)

    async def many(msgs: list[ScanLine], deps: None) -> None:
        batches.append(len(msgs))
        if any(m.text == "poison" for m in msgs):
            raise ZeroDivisionError("a bug")
        handled.extend(m.index for m in msgs)

    consumer = await bus.consume_batch(stream=Stream.EVENTS, durable="batched", filter_subject="mma.evt.*.scan_line",
                                       handlers={ScanLine: one}, batch_handler=many, deps=None, batch=50)
    for i in range(20):
        await bus.publish(line("b", i, "poison" if i == 7 else "ok"))
    await wait_for(lambda: consumer.handled == 19, timeout=20, what="the 19 good messages acked")
    kept = await wait_for(lambda: dead_letters(bus, "batched"), timeout=20, what="the poison kept")
    assert sorted(set(handled)) == [i for i in range(20) if i != 7]
    assert [d.subject for d in kept] == ["mma.evt.b.scan_line"] and kept[0].deliveries == 3
    assert ScanLine.model_validate_json(kept[0].data).index == 7


async def test_a_dependency_that_is_away_is_waited_for_past_the_bound(bus: Bus) -> None:
    """With retry_unavailable, ServiceUnavailableError never uses up the deliveries: nothing is dead-lettered."""
    calls: list[int] = []

    async def flaky(msg: ScanLine, deps: None) -> None:
        calls.append(msg.index)
        if len(calls) <= 4:  # more than max_deliveries (3)
            raise ServiceUnavailableError("the ledger is restarting")

    consumer = await bus.consume(stream=Stream.EVENTS, durable="patient", filter_subject="mma.evt.>",
                                 handlers={ScanLine: flaky}, deps=None, retry_unavailable=True)
    await bus.publish(line("p", 1))
    await wait_for(lambda: consumer.handled == 1, timeout=30, what="acked after five deliveries")
    assert calls == [1] * 5
    assert await dead_letters(bus) == []


async def test_a_refused_report_is_kept_and_not_reported_again(bus: Bus) -> None:
    """A DeadLettered report its consumer refuses is kept in the stream, with no report of the report."""
    async def refuse(msg: DeadLettered, deps: None) -> None:
        raise MmaError("Postgres refused the error row", code="INVALID_MESSAGE")

    await bus.consume(stream=Stream.EVENTS, durable="ledgerish", filter_subject=DEAD_LETTER_SUBJECT,
                      handlers={DeadLettered: refuse}, deps=None)
    await bus.publish(DeadLettered(original_subject="mma.evt.x.done", reason="refused", data="{}"))
    [kept] = await wait_for(lambda: dead_letters(bus, "ledgerish"), timeout=10, what="the report kept")
    assert kept.subject == DEAD_LETTER_SUBJECT and kept.reason.startswith("MmaError")
    info = await bus.js.stream_info(Stream.EVENTS.value, subjects_filter=DEAD_LETTER_SUBJECT)
    assert info.state.messages == 1  # only the original report: no report of the refused report


async def test_the_original_headers_are_kept_and_removal_is_idempotent(bus: Bus) -> None:
    """Garbage is kept as it came (bytes and headers); removing a dead letter twice is harmless."""
    async def never(msg: ScanLine, deps: None) -> None:
        raise AssertionError("not decodable, never handled")

    await bus.consume(stream=Stream.EVENTS, durable="strict", filter_subject="mma.evt.*.scan_line",
                      handlers={ScanLine: never}, deps=None)
    await bus.publish_raw("mma.evt.g.scan_line", b"\xff{not json",
                          headers={TYPE_HEADER: "ScanLine", "Nats-Msg-Id": "garbage-1", "X-Trace": "t-1"})
    [kept] = await wait_for(lambda: dead_letters(bus, "strict"), timeout=10, what="the garbage kept")
    assert kept.data == b"\xff{not json" and kept.headers["X-Trace"] == "t-1"
    assert kept.reason.startswith("invalid ScanLine") and kept.deliveries == 1
    await deadletter.remove(bus.js, kept.seq)
    await deadletter.remove(bus.js, kept.seq)
    assert await dead_letters(bus) == [] and await deadletter.counts(bus.js) == {}


async def test_a_bug_behind_request_reply_is_not_retryable(bus: Bus) -> None:
    """The RPC edge answers a handler bug with INTERNAL_ERROR, which no consumer retries."""

    async def get(req: GetCustomer, deps: None) -> CustomerView:
        raise TypeError("a bug in the handler")

    await bus.serve(GetCustomer, get, None, queue="ledger")
    with pytest.raises(MmaError) as caught:
        await bus.request(GetCustomer(pass_id="pass:anon:x"), CustomerView)
    assert not isinstance(caught.value, ServiceUnavailableError)
    assert caught.value.instance_code == "INTERNAL_ERROR" and not is_retryable(caught.value)


async def test_a_full_dead_letter_stream_refuses_rather_than_drops(bus: Bus, settings: Settings) -> None:
    """At its byte limit the stream refuses the new dead letter: the message stays unacked, then is kept."""
    full = settings.model_copy(update={"dead_letter_max_bytes": 100})
    await deadletter.ensure_stream(bus.js, full)
    seen: list[int] = []

    async def never(msg: ScanLine, deps: None) -> None:
        seen.append(msg.index)
        raise MmaError("refused", code="INVALID_MESSAGE")

    await bus.consume(stream=Stream.EVENTS, durable="full", filter_subject="mma.evt.*.scan_line",
                      handlers={ScanLine: never}, deps=None)
    await bus.publish(line("f", 0, "x" * 500))
    await wait_for(lambda: len(seen) >= 1, timeout=10, what="the first delivery")
    assert await dead_letters(bus) == []
    info = await bus.js.consumer_info(Stream.EVENTS.value, "full")
    assert info.num_ack_pending == 1  # not termed, not acked: it will come again
    await deadletter.ensure_stream(bus.js, settings)
    [kept] = await wait_for(lambda: dead_letters(bus, "full"), timeout=20, what="kept once there is room")
    assert ScanLine.model_validate_json(kept.data).text == "x" * 500 and len(seen) >= 2
