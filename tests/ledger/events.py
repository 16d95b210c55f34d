"""One of every projected event, about one customer and one generation (test data)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from libs.schemas import (
    Assets,
    BusMessage,
    CancelRequested,
    CustomerEventRecorded,
    DeadLettered,
    FeedbackRecorded,
    Flow,
    GenerationAccepted,
    GenerationDone,
    GenerationFailed,
    GenerationRefunded,
    GenerationRejected,
    GenerationRequest,
    Inputs,
    MmaStatus,
    OpsLogged,
    ScanLine,
    SessionStarted,
    StatusChanged,
    StepPhase,
    StepRecorded,
)

T0 = datetime(2025, 12, 19, 12, 0, tzinfo=UTC)


def at(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


def every_event(tag: str, pass_id: str) -> list[BusMessage]:
    """A done generation, a failed one, and every customer/ops event, in stream order."""
    gen, bad = f"g-{tag}", f"b-{tag}"
    request = GenerationRequest(
        assets=Assets(product_image_url="https://assets.example.com/p.png"),
        inputs=Inputs(user_brief="a calm still life", style="minimal"),
    )
    return [
        SessionStarted(session_id=f"s-{tag}", pass_id=pass_id, at=at(0)),
        GenerationAccepted(generation_id=gen, pass_id=pass_id, flow=Flow.STILL_CREATE, price=1, balance=4,
                           request=request, session_id=f"s-{tag}", request_id="r1", at=at(1)),
        StatusChanged(generation_id=gen, pass_id=pass_id, status=MmaStatus.SCANNING, at=at(2)),
        StepRecorded(generation_id=gen, pass_id=pass_id, step_no=1, step_type="scan_product",
                     phase=StepPhase.SUCCEEDED, payload={"input": {}, "output": {"crt": "a vase"}}, at=at(3)),
        ScanLine(generation_id=gen, pass_id=pass_id, index=0, text="Looking at your vase", at=at(3)),
        StepRecorded(generation_id=gen, pass_id=pass_id, step_no=2, step_type="seedream_generate",
                     phase=StepPhase.STARTED, provider="seedream", payload={"input": {"prompt": "p"}}, at=at(4)),
        StepRecorded(generation_id=gen, pass_id=pass_id, step_no=2, step_type="seedream_generate",
                     phase=StepPhase.SUCCEEDED, provider="seedream", model="seedream-4", latency_ms=900,
                     payload={"input": {"prompt": "p"}, "output": {"output_url": "https://assets.example.com/o.png"}},
                     at=at(5)),
        StatusChanged(generation_id=gen, pass_id=pass_id, status=MmaStatus.GENERATING, at=at(5)),
        GenerationDone(generation_id=gen, pass_id=pass_id, vars={"prompts": {"clean_prompt": "p"}},
                       output_url="https://assets.example.com/o.png", output_key="o.png", prompt="p",
                       provider="seedream", model="seedream-4", at=at(6)),
        GenerationAccepted(generation_id=bad, pass_id=pass_id, flow=Flow.VIDEO_ANIMATE, price=5, balance=0,
                           parent_generation_id=gen, at=at(7)),
        StepRecorded(generation_id=bad, pass_id=pass_id, step_no=1, step_type="kling_generate",
                     phase=StepPhase.FAILED, payload={"error": None}, at=at(8)),
        GenerationFailed(generation_id=bad, pass_id=pass_id, code="KLING_TIMEOUT", message="Video timed out",
                         step_type="kling_generate", step_no=1, vars={"prompts": {"motion_prompt": "m"}},
                         detail={"emoji": "⏱️", "category": "TIMEOUT", "provider": "kling"}, at=at(9)),
        GenerationRefunded(generation_id=bad, pass_id=pass_id, amount=5, balance=5, at=at(10)),
        CancelRequested(generation_id=bad, pass_id=pass_id, requested_by="owner", at=at(10)),
        GenerationRejected(generation_id=f"r-{tag}", pass_id=pass_id, flow=Flow.STILL_CREATE,
                           code="INSUFFICIENT_CREDITS", message="no credits", at=at(10)),
        CustomerEventRecorded(event_id=f"e-{tag}", pass_id=pass_id, event_type="like", generation_id=gen,
                              payload={"tags": ["style.minimal"]}, tag_weight_deltas={"style.minimal": 0.5},
                              at=at(11)),
        CustomerEventRecorded(event_id=f"p-{tag}", pass_id=pass_id, event_type="preference_set",
                              payload={"hard_block": "motion.light_flicker"}, at=at(12)),
        FeedbackRecorded(feedback_id=f"f-{tag}", pass_id=pass_id, generation_id=gen, prompt="p",
                         comment="love it", image_url="https://assets.example.com/o.png", at=at(13)),
        OpsLogged(log_id=f"o-{tag}", level="warn", actor_pass_id=pass_id, route="/mma/events",
                  detail={"category": "VALIDATION_ERROR"}, at=at(14)),
        DeadLettered(original_subject="mma.evt.x.y", original_stream="MMA_EVENTS", stream_seq=99,
                     deliveries=1, reason="bad json", data="{not json", at=at(15)),
    ]
