"""One function per message the pipeline consumes."""

from __future__ import annotations

import time

import nats.js.errors
import structlog

from libs.errors import MmaError
from libs.schemas import GenerationJob, Stream
from services.pipeline.deps import PipelineDeps
from services.pipeline.runner import Run
from services.pipeline.state import RunState

log = structlog.get_logger("pipeline")


async def on_job(job: GenerationJob, deps: PipelineDeps) -> None:
    """Run (or resume) the job's flow; returns normally on success AND on a recorded failure.

    The run is registered before it reads anything, so a cancel request published meanwhile
    reaches it one way or the other.
    """
    started = time.perf_counter()
    run = Run(job, deps, RunState(generation_id=job.generation_id), job_seq=lambda: job_seq(job, deps))
    deps.runs.add(job.generation_id, run)
    try:
        await run.execute()
    finally:
        deps.runs.remove(job.generation_id, run)
    log.info("pipeline.job_handled", flow=job.command.flow.value, resumed=run.resumed, status=run.state.status,
             steps=run.state.step_count, duration_ms=round((time.perf_counter() - started) * 1000, 1))


async def job_seq(job: GenerationJob, deps: PipelineDeps) -> int:
    """The job's JOBS stream sequence: its place in line among the customer's waiting jobs."""
    try:
        raw = await deps.bus.js.get_last_msg(Stream.JOBS.value, job.subject())
    except nats.js.errors.NotFoundError:
        return 0
    return int(raw.seq or 0)


async def on_job_exhausted(job: GenerationJob, exc: BaseException, deps: PipelineDeps) -> None:
    """A job that failed for good or exhausted its deliveries fails its generation (billing refunds)."""
    state = await deps.checkpoints.load(job.generation_id) or RunState(generation_id=job.generation_id)
    if state.terminal:
        return
    run = Run(job, deps, state)
    error = exc if isinstance(exc, MmaError) else MmaError(type(exc).__name__, code="UNCAUGHT_EXCEPTION")
    await run.fail(error)
