"""The bus against a real embedded NATS: dedupe, ack policy, dead letters, request/reply, replay."""

from __future__ import annotations

import asyncio

import pytest
import stamina
from stamina.instrumentation import get_prometheus_counter

from libs.bus import Bus
from libs.bus.retry import retried
from libs.errors import ConflictError, ServiceUnavailableError
from libs.schemas import (
    DEAD_LETTER_SUBJECT,
    TYPE_HEADER,
    CustomerView,
    DeadLettered,
    GetCustomer,
    MmaStatus,
    ScanLine,
    StatusChanged,
    Stream,
)
from libs.settings import Settings
from tests.helpers import wait_for


def line(gen: str, index: int, text: str = "hello") -> ScanLine:
    return ScanLine(generation_id=gen, pass_id="pass:anon:t", index=index, text=text)


async def test_same_msg_id_is_stored_once(bus: Bus) -> None:
    """A retried publish inside the dedupe window is dropped by the server."""
    first = await bus.publish(line("g1", 0))
    second = await bus.publish(line("g1", 0))
    assert not first.duplicate
    assert second.duplicate and second.seq == first.seq
    info = await bus.js.stream_info(Stream.EVENTS.value)
    assert info.state.messages == 1


async def test_streams_are_created_idempotently(bus: Bus) -> None:
    """Every service ensures the streams at start-up; the second call changes nothing."""
    await bus.ensure_streams()
    await bus.ensure_streams()
    assert await bus.streams_present()
    jobs = await bus.js.stream_info(Stream.JOBS.value)
    assert str(getattr(jobs.config.retention, "value", jobs.config.retention)) == "workqueue"


async def test_handler_failure_is_redelivered_then_acked(bus: Bus) -> None:
    """A retryable failure naks the message; the next delivery succeeds and is acked once."""
    calls: list[int] = []

    async def flaky(msg: ScanLine, deps: None) -> None:
        calls.append(msg.index)
        if len(calls) == 1:
            raise ServiceUnavailableError("database restarting")

    consumer = await bus.consume(stream=Stream.EVENTS, durable="flaky", filter_subject="mma.evt.>",
                                 handlers={ScanLine: flaky}, deps=None)
    await bus.publish(line("g2", 7))
    await wait_for(lambda: consumer.handled == 1, timeout=10, what="second delivery acked")
    assert calls == [7, 7]


async def test_a_handler_running_past_the_ack_wait_is_kept_by_heartbeats(settings: Settings) -> None:
    """The consumer's one heartbeat timer sends in-progress acks for every message in hand, so a handler
    that runs three ack waits long is neither redelivered nor run twice, and is acked once."""
    fast = await Bus.connect(settings.model_copy(update={"ack_wait_s": 0.6}), settings.nats_url or "", name="beats")
    try:
        await fast.ensure_streams()
        release = asyncio.Event()
        calls: list[int] = []

        async def slow(msg: ScanLine, deps: None) -> None:
            calls.append(msg.index)
            await release.wait()

        consumer = await fast.consume(stream=Stream.EVENTS, durable="slow", filter_subject="mma.evt.gbeat.>",
                                      handlers={ScanLine: slow}, deps=None, concurrency=4)
        await fast.publish(line("gbeat", 1))
        await fast.publish(line("gbeat", 2))
        await wait_for(lambda: len(calls) == 2, timeout=10, what="both handlers running")
        await wait_for(lambda: consumer.in_progress_sent >= 12, timeout=10, what="six beats each (three ack waits)")
        info = await fast.js.consumer_info(Stream.EVENTS.value, "slow")
        assert calls == [1, 2] and not info.num_redelivered
        release.set()
        await wait_for(lambda: consumer.handled == 2, timeout=10, what="both acked")
        assert calls == [1, 2]
    finally:
        await fast.close()


async def test_garbage_is_dead_lettered_and_the_consumer_goes_on(bus: Bus) -> None:
    """An undecodable message goes to the dead-letter subject; the next good one is handled."""
    seen: list[str] = []
    dead: list[DeadLettered] = []

    async def on_line(msg: ScanLine, deps: None) -> None:
        seen.append(msg.text)

    async def on_dead(msg: DeadLettered, deps: None) -> None:
        dead.append(msg)

    await bus.consume(stream=Stream.EVENTS, durable="dlq", filter_subject="mma.evt.>",
                      handlers={ScanLine: on_line, DeadLettered: on_dead}, deps=None)
    await bus.publish_raw("mma.evt.g3.scan_line", b"{not json", headers={TYPE_HEADER: "ScanLine"})
    await bus.publish(line("g3", 0, "after the garbage"))
    await wait_for(lambda: seen and dead, timeout=10, what="good message and dead letter")
    assert seen == ["after the garbage"]
    assert dead[0].original_subject == "mma.evt.g3.scan_line"
    assert "{not json" in dead[0].data
    assert bus.dead_letters == 1


async def test_non_retryable_error_calls_the_exhausted_hook(bus: Bus) -> None:
    """A handler error that must not be retried is reported once, then dead-lettered."""
    reported: list[str] = []

    async def refuse(msg: ScanLine, deps: None) -> None:
        raise ConflictError("no")

    async def exhausted(msg: ScanLine, exc: BaseException, deps: None) -> None:
        reported.append(type(exc).__name__)

    await bus.consume(stream=Stream.EVENTS, durable="refuse", filter_subject="mma.evt.*.scan_line",
                      handlers={ScanLine: refuse}, deps=None, on_exhausted=exhausted)
    await bus.publish(line("g4", 0))
    await wait_for(lambda: reported, timeout=10, what="exhausted hook")
    assert reported == ["ConflictError"]
    await wait_for(lambda: bus.last_seq(DEAD_LETTER_SUBJECT), timeout=5, what="dead letter stored")


async def test_request_reply_carries_errors_back(bus: Bus) -> None:
    """A remote MmaError is raised again at the caller with the same class and code."""

    async def get(req: GetCustomer, deps: None) -> CustomerView:
        if req.pass_id == "pass:anon:broke":
            raise ConflictError("Already used", first_delta=1)
        return CustomerView(pass_id=req.pass_id, credits=3)

    await bus.serve(GetCustomer, get, None, queue="ledger")
    view = await bus.request(GetCustomer(pass_id="pass:anon:ok"), CustomerView)
    assert view.credits == 3
    with pytest.raises(ConflictError) as caught:
        await bus.request(GetCustomer(pass_id="pass:anon:broke"), CustomerView)
    assert caught.value.details == {"first_delta": 1}


async def test_request_without_a_server_is_service_unavailable(bus: Bus) -> None:
    with pytest.raises(ServiceUnavailableError):
        await bus.request(GetCustomer(pass_id="pass:anon:x"), CustomerView, timeout=1)


async def test_request_is_answered_by_a_server_that_starts_late(bus: Bus) -> None:
    """A request sent while nobody serves its subject asks again, and a server subscribing meanwhile answers it."""
    counter = get_prometheus_counter()
    assert counter is not None

    def no_responder_retries() -> float:
        return sum(sample.value for metric in counter.collect() for sample in metric.samples
                   if sample.name == "stamina_retries_total"
                   and sample.labels["error_type"].endswith("NoRespondersError"))

    async def get(req: GetCustomer, deps: None) -> CustomerView:
        return CustomerView(pass_id=req.pass_id, credits=2)

    patient = Bus(bus.nc, bus.settings.model_copy(update={"rpc_responder_wait_s": 60.0}), "patient")
    before = no_responder_retries()
    call = asyncio.create_task(patient.request(GetCustomer(pass_id="pass:anon:late"), CustomerView, timeout=60))
    await wait_for(lambda: no_responder_retries() > before, timeout=30, what="the request asked again")
    assert not call.done()
    await bus.serve(GetCustomer, get, None, queue="ledger")
    view = await asyncio.wait_for(call, 30)
    assert view.pass_id == "pass:anon:late" and view.credits == 2


async def test_retried_tries_again_only_what_it_is_told_to_and_only_in_time() -> None:
    """An accepted failure is tried again until the call succeeds; another failure, or one after the time
    is up, is raised as it is."""
    calls: list[str] = []

    async def away_twice() -> str:
        calls.append("away_twice")
        if calls.count("away_twice") < 3:
            raise ConnectionError("away")
        return "answered"

    async def broken() -> str:
        calls.append("broken")
        raise ValueError("bug")

    def away(exc: Exception) -> bool:
        return isinstance(exc, ConnectionError)

    with stamina.set_testing(True, attempts=10):
        assert await retried(away_twice, on=away, timeout_s=30, wait_s=0.1, wait_max_s=2.0) == "answered"
        with pytest.raises(ValueError):
            await retried(broken, on=away, timeout_s=30, wait_s=0.1)
    calls.clear()
    with pytest.raises(ConnectionError):
        await retried(away_twice, on=away, timeout_s=0.0, wait_s=0.1)
    assert calls == ["away_twice"]


async def test_duplicating_publisher_stores_every_message_a_second_time(bus: Bus, settings: Settings) -> None:
    """With MMA_CHAOS_DUPLICATE_PUBLISH a publish is stored again under `<msg id>:dup` (a retry of it adds
    nothing); without it, once."""
    chaotic = Bus(bus.nc, settings.model_copy(update={"chaos_duplicate_publish": True}), "chaos")
    await bus.publish(line("plain", 0))
    await chaotic.publish(line("twice", 0))
    assert (await chaotic.publish(line("twice", 0))).duplicate
    info = await bus.js.stream_info(Stream.EVENTS.value)
    assert info.state.messages == 3
    ids = []
    for seq in range(1, 4):
        stored = await bus.js.get_msg(Stream.EVENTS.value, seq)
        ids.append((stored.headers or {}).get("Nats-Msg-Id"))
    assert ids == ["scan_line:plain:0", "scan_line:twice:0", "scan_line:twice:0:dup"]


async def test_follow_replays_then_resumes_after_a_sequence(bus: Bus) -> None:
    """Replay from the start, then from a sequence on, with no repeats (SSE Last-Event-ID)."""
    for i in range(3):
        await bus.publish(line("g5", i, f"line {i}"))
    await bus.publish(line("other", 0))
    await bus.publish(StatusChanged(generation_id="g5", pass_id="pass:anon:t", status=MmaStatus.SCANNING))

    async def take(after: int, n: int) -> list[tuple[int, object]]:
        out = []
        async for seq, msg in bus.follow("mma.evt.g5.>", after_seq=after):
            out.append((seq, msg))
            if len(out) == n:
                return out
        return out

    everything = await asyncio.wait_for(take(0, 4), 10)
    assert [type(m).__name__ for _, m in everything] == ["ScanLine"] * 3 + ["StatusChanged"]
    resumed = await asyncio.wait_for(take(everything[1][0], 2), 10)
    assert [seq for seq, _ in resumed] == [everything[2][0], everything[3][0]]


async def test_more_than_a_thousand_followers_at_once(bus: Bus) -> None:
    """Each SSE stream follows on its own consumer; the server's default cap of 1,000 is lifted."""
    await bus.publish(line("busy", 0))
    followers = [bus.follow("mma.evt.busy.>") for _ in range(1100)]
    try:
        first = await asyncio.wait_for(asyncio.gather(*(f.__anext__() for f in followers)), 60)
        assert len(first) == 1100 and all(seq == first[0][0] for seq, _ in first)
    finally:
        await asyncio.gather(*(f.aclose() for f in followers))


async def test_listen_hands_broadcasts_to_a_plain_function_and_refuses_a_coroutine_one(bus: Bus) -> None:
    """A broadcast reaches a listener as it is read (in the connection's reader); an async handler, which
    nothing there would ever await, is refused when subscribing rather than silently never run."""
    heard: list[object] = []
    arrived = asyncio.Event()

    def on_line(msg: object) -> None:
        heard.append(msg)
        arrived.set()

    async def never_run(msg: object) -> None:
        heard.append(msg)

    with pytest.raises(TypeError, match="plain function"):
        await bus.listen("mma.evt.g7.scan_line", never_run)  # type: ignore[arg-type]
    await bus.listen("mma.evt.g7.scan_line", on_line)
    await bus.publish(line("g7", 0, "first"))
    await asyncio.wait_for(arrived.wait(), 10)
    assert [(m.generation_id, m.text) for m in heard if isinstance(m, ScanLine)] == [("g7", "first")]
