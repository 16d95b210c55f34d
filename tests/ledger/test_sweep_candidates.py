"""Which charged generations the sweeper may stop: idle for their mode's window, never one showing progress."""

from __future__ import annotations

from typing import Any

from libs.schemas import (
    ChargedUnfinished,
    CreditApply,
    Flow,
    GenerationAccepted,
    StepPhase,
    StepRecorded,
)
from services.ledger import rpc
from services.ledger.deps import LedgerDeps
from services.ledger.handlers import EVENT_HANDLERS

PASS = "pass:email:sweep@example.com"


async def _charged(deps: LedgerDeps, gid: str, flow: Flow) -> None:
    await rpc.on_credit_apply(CreditApply(pass_id=PASS, delta=5, ref=f"topup:test:{gid}"), deps)
    await rpc.on_credit_apply(CreditApply(pass_id=PASS, delta=-1, ref=f"debit:generation:{gid}"), deps)
    accepted = GenerationAccepted(generation_id=gid, pass_id=PASS, flow=flow, price=1, balance=4)
    await EVENT_HANDLERS[GenerationAccepted](accepted, deps)


async def _age(pool: Any, gid: str, seconds: int) -> None:
    """Move the debit, the generation row and its steps `seconds` into the past."""
    async with pool.acquire() as conn:
        await conn.execute(
            "update mega_generations set mg_created_at = mg_created_at - make_interval(secs => $2),"
            " mg_updated_at = mg_updated_at - make_interval(secs => $2)"
            " where mg_generation_id = $1 or mg_id = 'credit_transaction:debit:generation:' || $1", gid, seconds)


async def test_each_mode_has_its_window_and_progress_resets_it(deps: LedgerDeps, pool: Any) -> None:
    """A still idle past its window is listed, a video as idle is not (longer window); a fresh step unlists."""
    for gid, flow in (("still-idle", Flow.STILL_CREATE), ("video-idle", Flow.VIDEO_ANIMATE),
                      ("still-moving", Flow.STILL_CREATE)):
        await _charged(deps, gid, flow)
        await _age(pool, gid, 120)
    step = StepRecorded(generation_id="still-moving", pass_id=PASS, step_no=1, step_type="seedream_generate",
                        phase=StepPhase.STARTED, payload={})
    await EVENT_HANDLERS[StepRecorded](step, deps)  # progress just now

    listed = await rpc.on_charged_unfinished(ChargedUnfinished(older_than_s=60, video_older_than_s=600), deps)
    assert [(i.generation_id, i.mode) for i in listed.items] == [("still-idle", "still")]
    assert listed.items[0].progress_at is not None

    both = await rpc.on_charged_unfinished(ChargedUnfinished(older_than_s=60), deps)  # one window for both
    assert sorted(i.generation_id for i in both.items) == ["still-idle", "video-idle"]
