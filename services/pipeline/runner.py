"""Running one generation step by step, resumable after a crash at any point.

Each transition (status, step record + scan lines, done/failed) is first written to
the run's checkpoint as an outbox, then published with deterministic msg ids
(`checkpoint.Outbox`, a group commit: transitions decided while a write is in flight
share the next write). A redelivered job republishes the outbox as it was (never
different content), then continues after the last completed step. Failure is a
result: the failing step and the generation are recorded failed, and the job is acked.
A failure and a cancel end through the same path (`Run.end`, what they say: ending.py).

Fewer round trips per step: the next step's status change rides in the same checkpoint
as the previous transition; a step's transition is written while the next step runs, and
steps that take no time share one write (the run waits for the checkpoint only before a
prediction's wait, for everything at its end); an outbox's messages are published
pipelined (written in outbox order on one connection, acks awaited together) while the
next checkpoint is written, which still carries them until their acks are in. The
messages in hand are published as they are; only a resume rebuilds them from the stored
outbox. A batch is published only once the previous batch's acks are in, so the stream
holds a run's messages in the order they were decided, even across a NATS restart.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC
from typing import Any

import structlog
from prometheus_client import Histogram

from libs.bus.direct import Stored
from libs.errors import MmaError, ServiceUnavailableError
from libs.final import final_event
from libs.metrics import GENERATIONS, STEP_LATENCY
from libs.schemas import (
    BusMessage,
    GenerationFailed,
    GenerationJob,
    LikeList,
    MmaStatus,
    ScanLine,
    StatusChanged,
    StepPhase,
    status_can_move,
    utcnow,
)
from services.pipeline.checkpoint import Outbox
from services.pipeline.config import ActiveConfig
from services.pipeline.control import CancelSwitch
from services.pipeline.deps import PipelineDeps
from services.pipeline.ending import Ending, cancel_prediction, cancellation, done_event, failure
from services.pipeline.flows import Prepared, prepare
from services.pipeline.pickup import pick_up
from services.pipeline.records import StepRun, started_record
from services.pipeline.slots import CustomerSlots, Slot
from services.pipeline.state import Pending, RunIds, RunState, StepArg
from services.pipeline.steps import STEPS
from services.pipeline.steps.base import StepContext, StepFn, status_for

log = structlog.get_logger("pipeline")


async def first_in_line() -> int:
    """The place in line of a run that must not queue behind new jobs (a resumed one)."""
    return 0


can_move = functools.lru_cache(maxsize=256)(status_can_move)  # (from, to) pairs are few: asked once each


@functools.cache
def step_latency(step_type: str) -> Histogram:
    """The step type's latency histogram (`labels` looked up once per type)."""
    return STEP_LATENCY.labels(step_type=step_type)


def _stay() -> None:
    return None


def _deadline_passed(job: GenerationJob) -> bool:
    deadline = job.command.deadline
    if deadline is None:
        return False
    return (deadline if deadline.tzinfo else deadline.replace(tzinfo=UTC)) <= utcnow()


class Run:
    """One generation's run inside one delivery of its job.

    A cancel request interrupts only what waits on the outside world (a customer slot,
    a step's provider call), never a checkpoint or a publish (see `CancelSwitch`).
    """

    def __init__(self, job: GenerationJob, deps: PipelineDeps, state: RunState,
                 job_seq: Callable[[], Awaitable[int]] = first_in_line) -> None:
        self.job = job
        self.deps = deps
        self.state = state
        self._job_seq = job_seq  # the job's place in line for a customer slot, asked only if it must wait
        self.leave_gate: Callable[[], None] = _stay
        self.ids = RunIds(generation_id=job.generation_id, pass_id=job.pass_id)
        self.outbox = Outbox(deps.checkpoints, deps.bus)
        self.cancel = CancelSwitch()
        self.resumed = False  # a checkpoint was found
        # the start-of-run reads, begun before the run knows whether it needs them
        self._prepared: asyncio.Task[Prepared] | None = None
        self._likes: LikeList | None = None  # the like window the start read brought
        self._slots_seen: list[Stored | None] | None = None  # the customer's slots as read at pickup
        self.kept: dict[str, bytes] = {}  # the last output a step stored, for the step after it (a postscan)

    def request_cancel(self, requested_by: str) -> None:
        self.cancel.request(requested_by)

    async def commit(self, messages: Sequence[BusMessage]) -> None:
        """Checkpoint and publish a transition, and wait until it (and all before it) is published."""
        await self.outbox.commit(self.state, messages)

    def queue(self, messages: Sequence[BusMessage], *, with_prep: bool = False) -> None:
        """Checkpoint and publish a transition in the background (`Outbox.queue`)."""
        self.outbox.queue(self.state, messages, with_prep=with_prep)

    # ------------------------------------------------------------------ start

    async def execute(self) -> None:
        """Resume or start; the caller has registered the run, so a cancel request reaches it or is in the
        stream by the time the stream is read.

        The start-of-run reads (config, taste, parent, like window) go out at once, while the checkpoint,
        a cancel request left in the stream (one queued job had no process to reach) and the customer's
        slots are read (`pickup.py`); a resumed run, or one that had to wait in line for its slot, drops
        them (the latter reads again once it starts). Returns only once every message is acked.
        """
        self.leave_gate = await self.deps.start_gate.enter()
        self._read_ahead()
        try:
            picked = await pick_up(self.deps, self.job)
            if picked.state is not None:
                self.state, self.resumed = picked.state, True
            if picked.cancel_requested_by is not None:
                self.cancel.request(picked.cancel_requested_by)
            self._slots_seen = picked.slots
            if self.state.prep:
                self._drop_reads()
            await self._execute()
            await self.outbox.flush()
        finally:
            self.leave_gate()
            self._drop_reads()
            await self.outbox.settle()

    async def _execute(self) -> None:
        await self.outbox.replay(self.state)
        if self.state.terminal:
            log.info("pipeline.job_already_finished", **self.ids)
            return
        if self.cancel.requested_by is not None:
            if await final_event(self.deps.bus, self.job.generation_id) is None:  # else the sweeper ended it
                await self.end_cancelled()
            return
        if await self.deadline_ended():
            return
        slot = await self.take_slot()
        if slot is None:
            return
        self.outbox.at_end = functools.partial(slot.release, self.job.generation_id)  # in one batch with the forget
        try:
            if not await self.deadline_ended():
                await self.run_flow()
        finally:
            await asyncio.shield(slot.release(self.job.generation_id))

    async def take_slot(self) -> Slot | None:
        """The customer's slot (a no-op one without a limit); None when the run ended while it waited in
        line: cancelled, or its deadline passed. A timeout of NATS (away for a moment) propagates, so
        the job is redelivered instead of acked."""
        slots = self.deps.slots
        if slots is None:
            return Slot()
        if self.state.prep:  # a resumed run takes its slot back (or a free one) at once
            return await slots.acquire(self.job.generation_id, self.job.pass_id, self.resumed_place,
                                       self._seen_slots())
        try:
            slot = await self.cancel.interruptible(self.wait_for_slot(slots))
        except asyncio.CancelledError:
            if not self.cancel.interrupted():
                raise
            await self.end_cancelled()
            return None
        except TimeoutError:
            if not await self.deadline_ended():
                raise  # NATS timed out (away for a moment), not the deadline: the job is redelivered
            return None
        if slot.waited:
            self._drop_reads()
        return slot

    async def resumed_place(self) -> int:
        """A resumed run waits first in line (out of the start gate)."""
        self.leave_gate()
        return 0

    async def job_seq(self) -> int:
        """The job's place in line, asked when it must wait for its slot: it leaves the start gate."""
        self.leave_gate()
        return await self._job_seq()

    async def wait_for_slot(self, slots: CustomerSlots) -> Slot:
        """The customer's slot, waited for in order; TimeoutError when the deadline passes first."""
        deadline, seen = self.job.command.deadline, self._seen_slots()
        if deadline is None:
            return await slots.acquire(self.job.generation_id, self.job.pass_id, self.job_seq, seen)
        aware = deadline if deadline.tzinfo else deadline.replace(tzinfo=UTC)
        remaining = (aware - utcnow()).total_seconds()
        async with asyncio.timeout(max(0.0, remaining)):
            return await slots.acquire(self.job.generation_id, self.job.pass_id, self.job_seq, seen)

    def _seen_slots(self) -> list[Stored | None] | None:
        """The slots as read at pickup, used once (a second attempt reads them again)."""
        seen, self._slots_seen = self._slots_seen, None
        return seen

    async def deadline_ended(self) -> bool:
        """A run that has not started yet and whose deadline passed ends DEADLINE_EXCEEDED (refunded)."""
        if self.state.prep or not _deadline_passed(self.job):
            return False
        await self.fail(MmaError("the deadline passed before the run could start", code="DEADLINE_EXCEEDED"))
        return True

    def _read_ahead(self) -> asyncio.Task[Prepared]:
        self._prepared = asyncio.create_task(prepare(self.job, self.deps.bus, self.deps.postscan_video))
        return self._prepared

    def _drop_reads(self) -> None:
        """The start-of-run read, when the run will not use it: cancelled, its error (if any) retrieved."""
        task, self._prepared = self._prepared, None
        if task is not None:
            task.cancel()
            task.add_done_callback(_retrieved)

    # ------------------------------------------------------------------ steps

    async def run_flow(self) -> None:
        if not self.state.prep:
            try:
                prep, vars, likes = await (self._prepared or self._read_ahead())
            except ServiceUnavailableError:
                raise
            except MmaError as exc:
                await self.fail(exc)
                return
            self.state.prep, self.state.vars = prep, vars
            self._likes = likes  # for the like_history step (None: it reads the window itself)
            self.queue(self.status_move(1), with_prep=True)  # the first status rides in the prep checkpoint
        self.leave_gate()  # started: the next run may start
        plan = self.state.prep["plan"]
        config = ActiveConfig.from_json(self.state.prep["config"])
        while self.state.step_count < len(plan):
            step_type, arg = plan[self.state.step_count]
            if not await self.run_step(self.state.step_count + 1, step_type, arg, config):
                return
        if self.cancel.requested_by is not None:
            await self.end_cancelled()
            return
        await self.finish()

    def status_move(self, step_no: int) -> list[BusMessage]:
        """The status change of step `step_no` (1-based) of the plan, applied to the state, as the
        message to commit with the current transition; [] when there is no such step or no move."""
        plan = self.state.prep.get("plan") or []
        if step_no > len(plan):
            return []
        status = status_for(plan[step_no - 1][0])
        if not can_move(self.state.status, status.value):
            return []
        self.state.status = status.value
        return [StatusChanged(**self.ids, status=status)]

    async def advance(self, status: MmaStatus) -> None:
        if can_move(self.state.status, status.value):
            self.state.status = status.value
            self.queue([StatusChanged(**self.ids, status=status)])

    async def on_started(self, ctx: StepContext, prediction_id: str) -> None:
        """Record the prediction id (checkpoint + STARTED step), written at once while the step goes on: a
        crash before the write lands loses the id whether or not the step waited for it, and every later
        transition is written after it (the outbox keeps their order), so waiting would only add its round
        trip to every prediction. A failed write is raised by the run's next wait on the outbox."""
        self.state.pending = Pending(step_no=ctx.step_no, prediction_id=prediction_id)
        self.state.provider_started = True
        self.queue([started_record(ctx, self.ids, prediction_id)])
        self.outbox.kick()

    async def run_step(self, step_no: int, step_type: str, arg: StepArg, config: ActiveConfig) -> bool:
        """Run one step; False when it failed or was cancelled (the end is already recorded)."""
        if self.cancel.requested_by is not None:
            await self.end_cancelled()
            return False
        await self.advance(status_for(step_type))  # a no-op unless the previous commit could not carry it
        ctx = StepContext(self.deps, self.job, self.state, config, step_no, step_type, arg, self.on_started,
                          likes=self._likes, kept=self.kept)
        step = StepRun(ctx)
        try:
            await self.cancel.interruptible(_stepped(STEPS[step_type], ctx))
        except asyncio.CancelledError:
            if not self.cancel.interrupted():
                raise
            await self.end_cancelled(step)
            return False
        except ServiceUnavailableError:
            raise  # the ledger or the bus is away: redeliver and resume here
        except MmaError as exc:
            await self.fail(exc, step)
            return False
        except Exception as exc:  # the edge of a step: an unexpected bug fails the generation, loudly
            log.exception("pipeline.step_crashed", step_type=step_type, step_no=step_no, **self.ids)
            await self.fail(exc, step)
            return False
        elapsed = step.stop()
        messages: list[BusMessage] = []
        for line in ctx.lines:
            messages.append(ScanLine(**self.ids, index=len(self.state.scan_lines), text=line))
            self.state.scan_lines.append(line)
        self.state.vars["userMessages"]["scan_lines"] = list(self.state.scan_lines)
        record = step.record(self.ids, StepPhase.SUCCEEDED)
        messages.append(record)
        self.state.step_count = step_no
        self.state.pending = None
        messages += self.status_move(step_no + 1)  # the next step's status, in this same checkpoint
        self.outbox.hold(ctx.uploads)  # the checkpoint recording the step's output waits for its upload
        self.queue(messages)
        step_latency(step_type).observe(elapsed)
        log.info("pipeline.step_completed", step_type=step_type, step_no=step_no, provider=ctx.provider,
                 duration_ms=record.latency_ms, **self.ids)
        return True

    # ------------------------------------------------------------------ ends

    async def finish(self) -> None:
        done = done_event(self.job, self.state.vars, self.deps.settings)
        await self._close([done], done.status)
        log.info("pipeline.generation_done", status=done.status.value, steps=self.state.step_count, **self.ids)

    async def fail(self, exc: BaseException, step: StepRun | None = None) -> None:
        """End `error`: the failed step (if one was running) and the generation, in both log planes."""
        await self.end(failure(exc, self.job, step), step)

    async def end_cancelled(self, step: StepRun | None = None) -> None:
        """End `cancelled` (or STUCK_TIMEOUT, when the sweeper asked): a running prediction is cancelled at
        the provider first."""
        prediction = await cancel_prediction(self.state, self.deps.providers.predictor, step, self.ids)
        await self.end(cancellation(self.job, self.state, step, self.cancel.requested_by,
                                    self.deps.settings.cancel_refund_after_provider_start, prediction), step)

    async def end(self, ending: Ending, step: StepRun | None) -> None:
        """The one way a run ends other than done: the running step recorded FAILED, then `failed`."""
        messages: list[BusMessage] = []
        if step is not None:
            messages.append(step.record(self.ids, StepPhase.FAILED, ending.step_error))
        messages.append(GenerationFailed(
            **self.ids, code=ending.code, message=ending.message, status=ending.status,
            step_type=step.ctx.step_type if step else None, step_no=step.ctx.step_no if step else None,
            vars=self.state.vars, detail=ending.detail,
        ))
        await self._close(messages, ending.status)
        if step is not None:
            STEP_LATENCY.labels(step_type=step.ctx.step_type).observe(step.stop())
        log.log(ending.log_level, ending.log_event, **ending.log_fields, **self.ids)

    async def _close(self, messages: list[BusMessage], status: MmaStatus) -> None:
        """Commit the run's last transition: terminal, nothing pending, counted once by its status."""
        self.state.terminal = True
        self.state.status = status.value
        self.state.pending = None
        await self.commit(messages)
        GENERATIONS.labels(flow=self.job.command.flow.value, status=status.value).inc()


async def _stepped(step: StepFn, ctx: StepContext) -> None:
    """The step; when it does not succeed, the uploads it started are left to finish on their own (no
    checkpoint records their output), their errors retrieved."""
    try:
        await step(ctx)
    except BaseException:
        for upload in ctx.uploads:
            upload.add_done_callback(_retrieved)
        ctx.uploads.clear()
        raise


def _retrieved(task: asyncio.Future[Any]) -> None:
    """A done callback: the task's error (if any) counts as retrieved (no "never retrieved" warning)."""
    if not task.cancelled():
        task.exception()
