"""The debit before a generation runs and the refund after it fails, on the real ledger."""

from __future__ import annotations

from datetime import timedelta

import orjson

from libs.schemas import (
    TYPE_HEADER,
    GenerationAccepted,
    GenerationFailed,
    GenerationRefunded,
    GenerationRejected,
    utcnow,
)
from tests.billing.support import (
    balance_of,
    command,
    credit_rows,
    events_of,
    give_credits,
    job_of,
    new_pass,
    next_event,
)
from tests.helpers import wait_for


async def test_an_accepted_generation_is_debited_then_handed_to_the_pipeline(bus, services, ledger, db):
    """A video animate costs 5: one debit row, `accepted` with the new balance, then the job."""
    await services.start("billing")
    pass_id = new_pass()
    await give_credits(bus, pass_id, 12)
    cmd = command(pass_id, "video_animate")
    await bus.publish(cmd)

    accepted = await next_event(bus, cmd.generation_id, {"accepted", "rejected"})
    assert isinstance(accepted, GenerationAccepted)
    assert (accepted.price, accepted.balance, accepted.request_id) == (5, 7, cmd.request_id)
    job = await wait_for(lambda: job_of(bus, cmd.generation_id), 10, what="the job")
    assert job.price == 5 and job.command.generation_id == cmd.generation_id
    debits = [r for r in await credit_rows(db, pass_id) if r["mg_generation_id"] == cmd.generation_id]
    assert [(r["mg_delta"], r["mg_ref_type"], r["mg_ref_id"]) for r in debits] == [
        (-5, "generation", cmd.generation_id)
    ]
    assert await balance_of(db, pass_id) == 7


async def test_a_motion_suggestion_is_accepted_without_a_debit(bus, services, ledger, db):
    """suggest_only writes text only: price 0, no credit row, still a job."""
    await services.start("billing")
    pass_id = new_pass()
    await give_credits(bus, pass_id, 1)
    cmd = command(pass_id, "video_animate", suggest_only=True)
    await bus.publish(cmd)

    accepted = await next_event(bus, cmd.generation_id, {"accepted", "rejected"})
    assert isinstance(accepted, GenerationAccepted)
    assert (accepted.price, accepted.balance) == (0, 1)
    assert await wait_for(lambda: job_of(bus, cmd.generation_id), 10, what="the job")
    assert all(r["mg_generation_id"] != cmd.generation_id for r in await credit_rows(db, pass_id))


async def test_insufficient_credits_reject_with_no_debit_and_no_job(bus, services, ledger, db):
    """With 0 credits a still create is rejected with balance and price; nothing is charged or queued."""
    await services.start("billing")
    pass_id = new_pass()
    cmd = command(pass_id, "still_create")
    await bus.publish(cmd)

    rejected = await next_event(bus, cmd.generation_id, {"accepted", "rejected"})
    assert isinstance(rejected, GenerationRejected)
    assert rejected.code == "INSUFFICIENT_CREDITS"
    assert (rejected.balance, rejected.price) == (0, 1)
    assert rejected.message == "Not enough Mina credits. Need 1, you have 0."
    assert await job_of(bus, cmd.generation_id) is None
    assert await credit_rows(db, pass_id) == []


async def test_a_past_deadline_is_refused_before_any_charge(bus, services, ledger, db):
    """A command whose deadline has passed is rejected DEADLINE_EXCEEDED with no debit and no job."""
    await services.start("billing")
    pass_id = new_pass()
    await give_credits(bus, pass_id, 5)
    cmd = command(pass_id, "still_create", deadline=utcnow() - timedelta(seconds=1))
    await bus.publish(cmd)

    rejected = await next_event(bus, cmd.generation_id, {"accepted", "rejected"})
    assert isinstance(rejected, GenerationRejected) and rejected.code == "DEADLINE_EXCEEDED"
    assert await job_of(bus, cmd.generation_id) is None
    assert [r["mg_reason"] for r in await credit_rows(db, pass_id)] == ["test_seed"]
    assert await balance_of(db, pass_id) == 5


async def test_a_failed_generation_is_refunded_once_when_failed_arrives_three_times(bus, services, ledger, db):
    """Three deliveries of `failed` (three msg ids) give one refund row of exactly the debit."""
    billing = await services.start("billing")
    pass_id = new_pass()
    await give_credits(bus, pass_id, 6)
    cmd = command(pass_id, "video_animate")
    await bus.publish(cmd)
    assert isinstance(await next_event(bus, cmd.generation_id, {"accepted", "rejected"}), GenerationAccepted)

    failed = GenerationFailed(generation_id=cmd.generation_id, pass_id=pass_id, code="SEEDREAM_TIMEOUT",
                              message="The image model timed out.", step_type="seedream_generate")
    for copy in range(3):
        await bus.publish_raw(failed.subject(), orjson.dumps(failed.model_dump(mode="json")),
                              headers={"Nats-Msg-Id": f"test-failed-{copy}:{cmd.generation_id}",
                                       TYPE_HEADER: "GenerationFailed"})

    def handled() -> int:
        return sum(1 for e in billing.log_lines()
                   if e.get("event") == "billing.refund_applied" and e.get("generation_id") == cmd.generation_id)

    await wait_for(lambda: handled() == 3, 20, what="three failed deliveries handled")
    refunds = [r for r in await credit_rows(db, pass_id) if r["mg_delta"] > 0 and r["mg_reason"] == "refund"]
    assert [(r["mg_delta"], r["mg_ref_id"]) for r in refunds] == [(5, cmd.generation_id)]
    assert await balance_of(db, pass_id) == 6
    refunded = await events_of(bus, cmd.generation_id, "refunded")
    assert len(refunded) == 1 and isinstance(refunded[0], GenerationRefunded)
    assert (refunded[0].amount, refunded[0].balance) == (5, 6)


async def test_a_failure_with_no_debit_refunds_nothing(bus, services, ledger, db):
    """A `failed` for a generation that was never charged writes no credit row."""
    billing = await services.start("billing")
    pass_id = new_pass()
    await give_credits(bus, pass_id, 3)
    failed = GenerationFailed(generation_id="never-charged-1", pass_id=pass_id, code="X", message="x")
    await bus.publish(failed)
    await wait_for(lambda: any(e.get("event") == "billing.refund_skipped" for e in billing.log_lines()), 15,
                   what="the refund skipped")
    assert [r["mg_reason"] for r in await credit_rows(db, pass_id)] == ["test_seed"]


async def test_a_command_waits_for_the_ledger_instead_of_being_lost(bus, services, ledger, db):
    """With the ledger down the command is redelivered, and charged once the ledger is back."""
    billing = await services.start("billing")
    pass_id = new_pass()
    await give_credits(bus, pass_id, 2)
    ledger.kill()
    cmd = command(pass_id, "still_create")
    await bus.publish(cmd)
    await wait_for(lambda: any(e.get("event") == "bus.message_nak" for e in billing.log_lines()), 15,
                   what="billing to nak while the ledger is down")

    await services.start("ledger")
    accepted = await next_event(bus, cmd.generation_id, {"accepted", "rejected"}, timeout=30)
    assert isinstance(accepted, GenerationAccepted) and accepted.balance == 1
    assert await wait_for(lambda: job_of(bus, cmd.generation_id), 10, what="the job")
    assert [r["mg_delta"] for r in await credit_rows(db, pass_id)] == [2, -1]


async def test_a_backlog_of_commands_is_charged_exactly_within_each_balance(bus, services, ledger, db):
    """40 commands queued before billing starts (so they arrive as batches) for two customers with
    10 and 5 credits: exactly 10 + 5 accepted with a job each, the rest rejected, balances 0."""
    first, second = new_pass(), new_pass()
    await give_credits(bus, first, 10)
    await give_credits(bus, second, 5)
    cmds = [command(first if i % 2 else second, "still_create") for i in range(40)]
    for cmd in cmds:
        await bus.publish(cmd)
    await services.start("billing")

    decisions = {cmd.generation_id: await next_event(bus, cmd.generation_id, {"accepted", "rejected"})
                 for cmd in cmds}
    accepted = {gid for gid, msg in decisions.items() if isinstance(msg, GenerationAccepted)}
    by_customer = {who: sum(1 for c in cmds if c.pass_id == who and c.generation_id in accepted)
                   for who in (first, second)}
    assert by_customer == {first: 10, second: 5}
    for gid, msg in decisions.items():
        if gid not in accepted:
            assert isinstance(msg, GenerationRejected) and msg.code == "INSUFFICIENT_CREDITS"
            assert msg.balance == 0
    for gid in accepted:
        assert await wait_for(lambda gid=gid: job_of(bus, gid), 10, what="the job")
    assert await balance_of(db, first) == 0 and await balance_of(db, second) == 0
    debits = [r for who in (first, second) for r in await credit_rows(db, who) if r["mg_delta"] < 0]
    assert sorted(r["mg_generation_id"] for r in debits) == sorted(accepted)
