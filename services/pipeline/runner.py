"""Running one generation step by step, resumable after a crash at any point.

Each transition (status, step record + scan lines, done/failed) is first written to
the run's checkpoint as an outbox, then published with deterministic msg ids. A
redelivered job republishes the outbox as it was (never different content), then
continues after the last completed step. Failure is a result: the failing step and
the generation are recorded failed, and the job is acked.

Fewer round trips per step: the next step's status change rides in the same checkpoint
as the previous transition (one KV write per step), and an outbox's messages are
published pipelined (written in outbox order on one connection, acks awaited together).
The messages in hand are published as they are; only a resume rebuilds them from the
stored outbox. Each transition waits for its acks before the next one starts, so the
stream holds a run's messages in the order they were decided, even across a NATS restart.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import structlog

from libs.errors import ConfigError, GptSchemaError, MmaError, ProviderError, ServiceUnavailableError
from libs.final import STUCK_CODE, STUCK_MESSAGE, SWEEPER, final_event, last_event
from libs.metrics import GENERATIONS, STEP_LATENCY
from libs.schemas import (
    MESSAGE_TYPES,
    BusMessage,
    CancelRequested,
    Flow,
    GenerationDone,
    GenerationFailed,
    GenerationJob,
    LikeList,
    MmaStatus,
    ScanLine,
    StatusChanged,
    StepPhase,
    StepRecorded,
    status_can_move,
    utcnow,
)
from services.pipeline.adapters.retry import count_provider_error
from services.pipeline.checkpoint import RunState
from services.pipeline.config import ActiveConfig
from services.pipeline.deps import PipelineDeps
from services.pipeline.fingertips import fingertips_done
from services.pipeline.flows import prepare
from services.pipeline.slots import CustomerSlots, Slot
from services.pipeline.steps import STEPS
from services.pipeline.steps.base import StepContext, status_for
from services.pipeline.steps.history import like_window

log = structlog.get_logger("pipeline")

CATEGORIES = {
    "TIMEOUT": "⏱️",
    "PROVIDER_ERROR": "🛰️",
    "GPT_SCHEMA_ERROR": "🧠",
    "CONFIG_ERROR": "🎛️",
    "VALIDATION_ERROR": "⚠️",
    "UNCAUGHT_EXCEPTION": "💥",
    "CANCELLED": "🛑",
}
SAFE_MESSAGES = {
    "TIMEOUT": "The generator took too long to answer. Your credits were refunded.",
    "PROVIDER_ERROR": "The generator failed on this one. Your credits were refunded.",
    "GPT_SCHEMA_ERROR": "Mina could not understand the model's answer. Your credits were refunded.",
    "CONFIG_ERROR": "Mina is misconfigured right now. Your credits were refunded.",
    "VALIDATION_ERROR": "Something in the request could not be used. Your credits were refunded.",
    "UNCAUGHT_EXCEPTION": "Something went wrong on our side. Your credits were refunded.",
}
CODE_MESSAGES = {
    "DEADLINE_EXCEEDED": "This request's deadline passed before it could start. Your credits were refunded.",
}
CANCELLED_CODE = "CANCELLED"
CANCELLED_MESSAGE = "Cancelled. Your credits were refunded."
CANCELLED_KEPT_MESSAGE = "Cancelled. The generator had already started, so the credits were used."

T = TypeVar("T")


def category_of(exc: BaseException, code: str) -> str:
    if code.endswith("TIMEOUT") or code == "DEADLINE_EXCEEDED":
        return "TIMEOUT"
    if isinstance(exc, GptSchemaError) or code == "GPT_SCHEMA_ERROR":
        return "GPT_SCHEMA_ERROR"
    if isinstance(exc, ConfigError):
        return "CONFIG_ERROR"
    if isinstance(exc, ProviderError):
        return "PROVIDER_ERROR"
    if isinstance(exc, MmaError) and 400 <= exc.http_status < 500:
        return "VALIDATION_ERROR"
    return "UNCAUGHT_EXCEPTION"


def error_payload(exc: BaseException) -> dict[str, Any]:
    """The step's `error` object (MMA.md): code, message, provider status, retry."""
    code = exc.instance_code if isinstance(exc, MmaError) else "UNCAUGHT_EXCEPTION"
    message = exc.message if isinstance(exc, MmaError) else type(exc).__name__
    error: dict[str, Any] = {"error_code": code, "message": message}
    if isinstance(exc, ProviderError) and exc.provider_http_status is not None:
        error["provider_http_status"] = exc.provider_http_status
    if isinstance(exc, MmaError) and isinstance(exc.details.get("retry"), dict):
        error["retry"] = exc.details["retry"]
    return error


def _timing(ctx: StepContext, started_at: datetime, started: float) -> dict[str, Any]:
    """The step's timing; `provider_ms` is the part of it spent inside provider calls."""
    return {"started_at": started_at.isoformat(), "ended_at": utcnow().isoformat(),
            "duration_ms": int((time.perf_counter() - started) * 1000),
            "provider_ms": round(ctx.provider_s * 1000, 2)}


async def first_in_line() -> int:
    """The place in line of a run that must not queue behind new jobs (a resumed one)."""
    return 0


def _deadline_passed(job: GenerationJob) -> bool:
    deadline = job.command.deadline
    if deadline is None:
        return False
    return (deadline if deadline.tzinfo else deadline.replace(tzinfo=UTC)) <= utcnow()


class Run:
    """One generation's run inside one delivery of its job.

    A cancel request interrupts only what waits on the outside world (a customer slot,
    a step's provider call), never a checkpoint or a publish: those always complete, and
    the flag is also checked between steps.
    """

    def __init__(self, job: GenerationJob, deps: PipelineDeps, state: RunState,
                 job_seq: Callable[[], Awaitable[int]] = first_in_line) -> None:
        self.job = job
        self.deps = deps
        self.state = state
        self.job_seq = job_seq  # the job's place in line for a customer slot, asked only if it must wait
        self.ids = {"generation_id": job.generation_id, "pass_id": job.pass_id}
        self.cancel_requested_by: str | None = None
        self._interruptible: asyncio.Future[Any] | None = None
        self.resumed = False  # a checkpoint was found
        # the start-of-run reads, begun before the run knows whether it needs them
        self._prepared: asyncio.Task[tuple[dict[str, Any], dict[str, Any]]] | None = None
        self._likes: asyncio.Task[LikeList] | None = None

    # ------------------------------------------------------------------ cancel

    def request_cancel(self, requested_by: str) -> None:
        if self.cancel_requested_by is not None:
            return
        self.cancel_requested_by = requested_by
        if self._interruptible is not None and not self._interruptible.done():
            self._interruptible.cancel()

    async def interruptible(self, awaitable: Awaitable[T]) -> T:
        """Run `awaitable` so that a cancel request interrupts it (CancelledError here)."""
        task: asyncio.Future[T] = asyncio.ensure_future(awaitable)
        self._interruptible = task
        try:
            return await task
        finally:
            self._interruptible = None

    def interrupted_by_cancel(self) -> bool:
        """A CancelledError came from a cancel request, not from this process shutting down."""
        current = asyncio.current_task()
        return self.cancel_requested_by is not None and (current is None or current.cancelling() == 0)

    async def cancel_on_stream(self) -> bool:
        """A cancel requested while the job was still queued (no process was running it)."""
        if self.cancel_requested_by is None:
            requested = await last_event(self.deps.bus, f"mma.evt.{self.job.generation_id}.cancel_requested")
            if isinstance(requested, CancelRequested):
                self.cancel_requested_by = "sweeper" if requested.requested_by == SWEEPER else "stream"
        return self.cancel_requested_by is not None

    # ------------------------------------------------------------------ outbox

    async def commit(self, messages: list[BusMessage], *, with_prep: bool = False) -> None:
        """Checkpoint the transition with its messages, then publish them (the outbox pattern).

        The acks are awaited before the next transition starts: with acks outstanding across
        steps, a publish lost in a NATS restart was retried after later steps (even after
        `done`), so SSE and the ledger saw a step after the end (tests/faults, NATS restart).
        """
        self.state.outbox = [{"type": type(m).__name__, "data": m.model_dump(mode="json")} for m in messages]
        await self.deps.checkpoints.save(self.state, with_prep=with_prep)
        await self.deps.bus.publish_all(messages)
        if self.state.terminal:  # the end is published: nothing of the run needs keeping
            await self.deps.checkpoints.forget(self.state)

    async def republish(self) -> None:
        """Publish the stored outbox again: a crash may have come between its checkpoint and its publish."""
        await self.deps.bus.publish_all(
            [MESSAGE_TYPES[item["type"]].model_validate(item["data"]) for item in self.state.outbox])

    def status_move(self, step_no: int) -> list[BusMessage]:
        """The status change of step `step_no` (1-based) of the plan, applied to the state, as the
        message to commit with the current transition; [] when there is no such step or no move."""
        plan = self.state.prep.get("plan") or []
        if step_no > len(plan):
            return []
        status = status_for(plan[step_no - 1][0])
        if not status_can_move(self.state.status, status.value):
            return []
        self.state.status = status.value
        return [StatusChanged(**self.ids, status=status)]

    @staticmethod
    def observe_step(step_type: str, seconds: float) -> None:
        STEP_LATENCY.labels(step_type=step_type).observe(seconds)

    def count_generation(self, status: str) -> None:
        GENERATIONS.labels(flow=self.job.command.flow.value, status=status).inc()

    # ------------------------------------------------------------------ flow

    async def execute(self) -> None:
        """Resume or start; the caller has registered the run, so a cancel request reaches it or is in the
        stream by the time the stream is read.

        The start-of-run reads (config, taste, parent, like window) go out at once, while the checkpoint,
        the cancel flag and the customer slot are read; a resumed run, or one that had to wait in line for
        its slot, drops them (the latter reads again once it starts). Returns only once every message is
        acked.
        """
        self._read_ahead()
        try:
            stored, _ = await asyncio.gather(self.deps.checkpoints.load(self.job.generation_id),
                                             self.cancel_on_stream())
            if stored is not None:
                self.state, self.resumed = stored, True
            if self.state.prep:
                self._drop_reads()
            await self._execute()
        finally:
            self._drop_reads()

    async def _execute(self) -> None:
        if self.state.outbox:
            await self.republish()
        if self.state.terminal:
            if self.state.outbox:  # a crash came between publishing the end and forgetting the run
                await self.deps.checkpoints.forget(self.state)
            log.info("pipeline.job_already_finished", **self.ids)
            return
        if self.cancel_requested_by is not None:
            if await final_event(self.deps.bus, self.job.generation_id) is None:  # else the sweeper ended it
                await self.end_cancelled(None, None, None)
            return
        if await self.deadline_ended():
            return
        slot: Slot | None = None
        if self.deps.slots is not None and not self.state.prep:
            try:
                slot = await self.interruptible(self.wait_for_slot(self.deps.slots))
                if slot.waited:
                    self._drop_reads()
            except asyncio.CancelledError:
                if not self.interrupted_by_cancel():
                    raise
                await self.end_cancelled(None, None, None)
                return
            except TimeoutError:
                if not await self.deadline_ended():
                    raise  # NATS timed out (away for a moment), not the deadline: the job is redelivered
                return
        elif self.deps.slots is not None:  # a resumed run takes its slot back (or a free one) at once
            slot = await self.deps.slots.acquire(self.job.generation_id, self.job.pass_id, first_in_line)
        try:
            if not await self.deadline_ended():
                await self.run_flow()
        finally:
            if slot is not None:
                await asyncio.shield(slot.release(self.job.generation_id))

    async def wait_for_slot(self, slots: CustomerSlots) -> Slot:
        """The customer's slot, waited for in order; TimeoutError when the deadline passes first."""
        deadline = self.job.command.deadline
        if deadline is None:
            return await slots.acquire(self.job.generation_id, self.job.pass_id, self.job_seq)
        aware = deadline if deadline.tzinfo else deadline.replace(tzinfo=UTC)
        remaining = (aware - utcnow()).total_seconds()
        async with asyncio.timeout(max(0.0, remaining)):
            return await slots.acquire(self.job.generation_id, self.job.pass_id, self.job_seq)

    async def deadline_ended(self) -> bool:
        """A run that has not started yet and whose deadline passed ends DEADLINE_EXCEEDED (refunded)."""
        if self.state.prep or not _deadline_passed(self.job):
            return False
        await self.fail(MmaError("the deadline passed before the run could start", code="DEADLINE_EXCEEDED"),
                        None, None, None)
        return True

    def _read_ahead(self) -> asyncio.Task[tuple[dict[str, Any], dict[str, Any]]]:
        self._prepared = asyncio.create_task(prepare(self.job, self.deps.bus, self.deps.postscan_video))
        if self.job.command.flow is Flow.STILL_CREATE:  # the flow with a like_history step
            self._likes = asyncio.create_task(like_window(self.deps.bus, self.job))
        return self._prepared

    def _drop_reads(self) -> None:
        """Start-of-run reads the run will not use: cancelled, their errors (if any) retrieved."""
        for task in (self._prepared, self._likes):
            if task is not None:
                task.cancel()
                task.add_done_callback(lambda done: done.cancelled() or done.exception())
        self._prepared = self._likes = None

    async def run_flow(self) -> None:
        if not self.state.prep:
            try:
                prep, vars = await (self._prepared or self._read_ahead())
            except ServiceUnavailableError:
                raise
            except MmaError as exc:
                await self.fail(exc, None, None, None)
                return
            self.state.prep, self.state.vars = prep, vars
            first_status = self.status_move(1)  # folded into the prep checkpoint
            if first_status:
                await self.commit(first_status, with_prep=True)
            else:
                await self.deps.checkpoints.save(self.state, with_prep=True)
        plan = self.state.prep["plan"]
        config = ActiveConfig.from_json(self.state.prep["config"])
        while self.state.step_count < len(plan):
            step_type, arg = plan[self.state.step_count]
            if not await self.run_step(self.state.step_count + 1, step_type, arg, config):
                return
        if self.cancel_requested_by is not None:
            await self.end_cancelled(None, None, None)
            return
        await self.finish()

    async def advance(self, status: MmaStatus) -> None:
        if status_can_move(self.state.status, status.value):
            self.state.status = status.value
            await self.commit([StatusChanged(**self.ids, status=status)])

    async def on_started(self, ctx: StepContext, prediction_id: str) -> None:
        """Record the prediction id (checkpoint + STARTED step) before anyone waits on it."""
        self.state.pending = {"step_no": ctx.step_no, "prediction_id": prediction_id}
        self.state.provider_started = True
        payload = {"input": dict(ctx.input), "output": {"prediction_id": prediction_id},
                   "timing": {"started_at": utcnow().isoformat(), "ended_at": None, "duration_ms": None},
                   "error": None}
        started = StepRecorded(**self.ids, step_no=ctx.step_no, step_type=ctx.step_type, phase=StepPhase.STARTED,
                               provider=ctx.provider, model=ctx.model, payload=payload)
        # runs inside the interruptible step: a cancel must not cut the checkpoint in half
        commit = asyncio.ensure_future(self.commit([started]))
        try:
            await asyncio.shield(commit)
        except asyncio.CancelledError:
            await commit
            raise

    async def run_step(self, step_no: int, step_type: str, arg: dict[str, Any], config: ActiveConfig) -> bool:
        """Run one step; False when it failed or was cancelled (the end is already recorded)."""
        if self.cancel_requested_by is not None:
            await self.end_cancelled(None, None, None)
            return False
        await self.advance(status_for(step_type))  # a no-op unless the previous commit could not carry it
        ctx = StepContext(self.deps, self.job, self.state, config, step_no, step_type, arg, self.on_started,
                          likes=self._likes)
        started_at, started = utcnow(), time.perf_counter()
        try:
            await self.interruptible(STEPS[step_type](ctx))
        except asyncio.CancelledError:
            if not self.interrupted_by_cancel():
                raise
            await self.end_cancelled(ctx, started_at, started)
            return False
        except ServiceUnavailableError:
            raise  # the ledger or the bus is away: redeliver and resume here
        except MmaError as exc:
            await self.fail(exc, ctx, started_at, started)
            return False
        except Exception as exc:  # the edge of a step: an unexpected bug fails the generation, loudly
            log.exception("pipeline.step_crashed", step_type=step_type, step_no=step_no, **self.ids)
            await self.fail(exc, ctx, started_at, started)
            return False
        elapsed = time.perf_counter() - started
        timing = _timing(ctx, started_at, started)
        messages: list[BusMessage] = []
        for line in ctx.lines:
            messages.append(ScanLine(**self.ids, index=len(self.state.scan_lines), text=line))
            self.state.scan_lines.append(line)
        self.state.vars["userMessages"]["scan_lines"] = list(self.state.scan_lines)
        messages.append(StepRecorded(
            **self.ids, step_no=step_no, step_type=step_type, phase=StepPhase.SUCCEEDED, provider=ctx.provider,
            model=ctx.model, latency_ms=timing["duration_ms"],
            payload={"input": ctx.input, "output": ctx.output, "timing": timing, "error": None},
        ))
        self.state.step_count = step_no
        self.state.pending = None
        messages += self.status_move(step_no + 1)  # the next step's status, in this same checkpoint
        await self.commit(messages)
        self.observe_step(step_type, elapsed)
        log.info("pipeline.step_completed", step_type=step_type, step_no=step_no, provider=ctx.provider,
                 duration_ms=timing["duration_ms"], **self.ids)
        return True

    async def finish(self) -> None:
        vars = self.state.vars
        outputs = vars["outputs"]
        flow = self.job.command.flow
        if flow is Flow.FINGERTIPS:
            done = fingertips_done(self.ids, vars)
        elif flow.mode == "still":
            done = GenerationDone(**self.ids, vars=vars, output_url=outputs.get("seedream_image_url"),
                                  output_key=outputs.get("seedream_image_id"), prompt=vars["prompts"]["clean_prompt"],
                                  provider="seedream", model=self.deps.settings.seedream_model, content_type="image")
        elif "kling_video_url" in outputs:
            prompt = vars["prompts"]["motion_prompt"] or vars["prompts"]["motion_sugg_prompt"]
            done = GenerationDone(**self.ids, vars=vars, output_url=outputs["kling_video_url"],
                                  output_key=outputs.get("kling_video_id"), prompt=prompt, provider="kling",
                                  model=self.deps.settings.kling_model, content_type="motion")
        else:  # suggest only: the suggestion is the result, no video was made
            suggested = vars["prompts"]["motion_sugg_prompt"] or vars["prompts"]["motion_prompt"]
            vars["prompts"]["suggested_prompt"] = suggested
            done = GenerationDone(**self.ids, status=MmaStatus.SUGGESTED, vars=vars, prompt=suggested,
                                  content_type="text")
        self.state.terminal = True
        self.state.status = done.status.value
        await self.commit([done])
        self.count_generation(done.status.value)
        log.info("pipeline.generation_done", status=done.status.value, steps=self.state.step_count, **self.ids)

    async def fail(self, exc: BaseException, ctx: StepContext | None, started_at: datetime | None,
                   started: float | None) -> None:
        """Run plane (failed step, generation error with partial vars) and ops plane (detail)."""
        error = error_payload(exc)
        code = str(error["error_code"])
        category = category_of(exc, code)
        if isinstance(exc, ProviderError):  # not already counted at the retry edge (e.g. a schema error)
            count_provider_error(ctx.provider if ctx and ctx.provider else "unknown", exc)
        messages: list[BusMessage] = []
        elapsed = time.perf_counter() - started if started is not None else None
        step_no = ctx.step_no if ctx else None
        step_type = ctx.step_type if ctx else None
        if ctx is not None and started_at is not None and started is not None:
            messages.append(StepRecorded(
                **self.ids, step_no=ctx.step_no, step_type=ctx.step_type, phase=StepPhase.FAILED,
                provider=ctx.provider, model=ctx.model, latency_ms=int((time.perf_counter() - started) * 1000),
                payload={"input": ctx.input, "output": ctx.output, "timing": _timing(ctx, started_at, started),
                         "error": error},
            ))
        detail: dict[str, Any] = {
            "emoji": CATEGORIES[category], "level": "error", "category": category, "error_code": code,
            "message": error["message"], "request_id": self.job.command.request_id, "pass_id": self.job.pass_id,
            "generation_id": self.job.generation_id, "step_type": step_type, "step_no": step_no,
            "provider": ctx.provider if ctx else None, "model": ctx.model if ctx else None,
            "ctx": ctx.ctx_ref if ctx else None, "settings": ctx.settings_ref if ctx else None,
            "provider_http_status": error.get("provider_http_status"), "retry": error.get("retry"),
        }
        if category == "UNCAUGHT_EXCEPTION":
            detail["stack"] = "".join(traceback.format_exception(exc))[-4000:]
        messages.append(GenerationFailed(
            **self.ids, code=code, message=CODE_MESSAGES.get(code, SAFE_MESSAGES[category]), step_type=step_type,
            step_no=step_no,
            vars=self.state.vars, detail=detail,
        ))
        self.state.terminal = True
        self.state.status = MmaStatus.ERROR.value
        await self.commit(messages)
        if ctx is not None and elapsed is not None:
            self.observe_step(ctx.step_type, elapsed)
        self.count_generation(MmaStatus.ERROR.value)
        log.warning("pipeline.generation_failed", error_code=code, category=category, step_type=step_type,
                    step_no=step_no, **self.ids)

    async def end_cancelled(self, ctx: StepContext | None, started_at: datetime | None,
                            started: float | None) -> None:
        """End `cancelled`: a running prediction is cancelled at the provider, then both log planes.

        `detail.provider_started` tells billing whether the generator may already have
        charged us (billing's refund rule reads it); `cancelled_phase` is the status the
        run had when it stopped.
        """
        phase = self.state.status
        pending = self.state.pending
        detail: dict[str, Any] = {
            "emoji": CATEGORIES["CANCELLED"], "level": "warn", "category": "CANCELLED",
            "error_code": CANCELLED_CODE, "message": "cancelled on request", "request_id": self.job.command.request_id,
            "pass_id": self.job.pass_id, "generation_id": self.job.generation_id,
            "step_type": ctx.step_type if ctx else None, "step_no": ctx.step_no if ctx else None,
            "provider": ctx.provider if ctx else None, "model": ctx.model if ctx else None,
            "cancelled_phase": phase, "provider_started": self.state.provider_started,
            "requested_by": self.cancel_requested_by,
        }
        if pending and pending.get("prediction_id"):
            prediction_id = str(pending["prediction_id"])
            detail["prediction_id"] = prediction_id
            try:
                cancel = self.deps.providers.predictor.cancel(prediction_id)
                await (ctx.provider_call(cancel) if ctx is not None else cancel)
                detail["prediction_cancelled"] = True
            except ProviderError as exc:
                detail["prediction_cancelled"] = False
                log.warning("pipeline.prediction_cancel_failed", prediction_id=prediction_id, error=exc.message,
                            **self.ids)
        messages: list[BusMessage] = []
        elapsed = time.perf_counter() - started if started is not None else None
        error = {"error_code": CANCELLED_CODE, "message": "cancelled on request"}
        if ctx is not None and started_at is not None and started is not None:
            messages.append(StepRecorded(
                **self.ids, step_no=ctx.step_no, step_type=ctx.step_type, phase=StepPhase.FAILED,
                provider=ctx.provider, model=ctx.model, latency_ms=int((time.perf_counter() - started) * 1000),
                payload={"input": ctx.input, "output": ctx.output, "timing": _timing(ctx, started_at, started),
                         "error": error},
            ))
        # billing decides the refund with the same setting (MMA_CANCEL_REFUND_AFTER_PROVIDER_START)
        refunded = not self.state.provider_started or self.deps.settings.cancel_refund_after_provider_start
        code, message, status = (CANCELLED_CODE, CANCELLED_MESSAGE if refunded else CANCELLED_KEPT_MESSAGE,
                                 MmaStatus.CANCELLED)
        if self.cancel_requested_by == SWEEPER:  # stopped as stuck: a failure of ours, always refunded
            code, message, status = STUCK_CODE, STUCK_MESSAGE, MmaStatus.ERROR
            detail.update(emoji=CATEGORIES["TIMEOUT"], level="error", category="TIMEOUT", error_code=STUCK_CODE,
                          message=STUCK_MESSAGE, run_cancelled=True)
        messages.append(GenerationFailed(
            **self.ids, code=code, message=message, status=status, step_type=ctx.step_type if ctx else None,
            step_no=ctx.step_no if ctx else None, vars=self.state.vars, detail=detail,
        ))
        self.state.terminal = True
        self.state.status = status.value
        self.state.pending = None
        await self.commit(messages)
        if ctx is not None and elapsed is not None:
            self.observe_step(ctx.step_type, elapsed)
        self.count_generation(self.state.status)
        log.info("pipeline.generation_cancelled", cancelled_phase=phase, provider_started=detail["provider_started"],
                 prediction_cancelled=detail.get("prediction_cancelled"), requested_by=self.cancel_requested_by,
                 **self.ids)
