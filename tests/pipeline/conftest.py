"""Helpers of the pipeline suite: publish a charged job, read back what the pipeline said."""

from __future__ import annotations

import asyncio
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from PIL import Image

from libs.assets import build_asset_store
from libs.bus import Bus
from libs.schemas import (
    BusMessage,
    Flow,
    GenerationAccepted,
    GenerationDone,
    GenerationFailed,
    GenerationJob,
    GenerationRequest,
    GenerationRequested,
    ScanLine,
    StatusChanged,
    StepPhase,
    StepRecorded,
    generation_events,
)
from libs.settings import Settings
from tests.wire import ReplicateServer


@dataclass
class Events:
    """Everything published about one generation, up to its terminal event."""

    messages: list[BusMessage] = field(default_factory=list)

    def of(self, kind: type[BusMessage]) -> list[Any]:
        return [m for m in self.messages if isinstance(m, kind)]

    @property
    def steps(self) -> list[StepRecorded]:
        return [m for m in self.of(StepRecorded) if m.phase is not StepPhase.STARTED]

    @property
    def step_types(self) -> list[str]:
        return [s.step_type for s in self.steps]

    def step(self, step_type: str) -> StepRecorded:
        return next(s for s in self.steps if s.step_type == step_type)

    @property
    def lines(self) -> list[ScanLine]:
        return self.of(ScanLine)

    @property
    def statuses(self) -> list[str]:
        return [m.status.value for m in self.of(StatusChanged)]

    @property
    def done(self) -> GenerationDone:
        found: GenerationDone = self.of(GenerationDone)[0]
        return found

    @property
    def failed(self) -> GenerationFailed:
        found: GenerationFailed = self.of(GenerationFailed)[0]
        return found


def make_job(flow: Flow, request: GenerationRequest | None = None, *, pass_id: str = "pass:user:tester",
             parent: str | None = None, price: int = 1) -> GenerationJob:
    generation_id = uuid.uuid4().hex
    command = GenerationRequested(generation_id=generation_id, pass_id=pass_id, flow=flow,
                                  parent_generation_id=parent, request=request or GenerationRequest(),
                                  request_id=f"req-{generation_id[:8]}")
    return GenerationJob(command=command, price=price)


async def publish_made_job(bus: Bus, job: GenerationJob) -> str:
    """What billing does after a debit: the accepted event (the ledger's generation row) and the job."""
    command = job.command
    await bus.publish(GenerationAccepted(generation_id=job.generation_id, pass_id=job.pass_id, flow=command.flow,
                                         parent_generation_id=command.parent_generation_id, price=job.price,
                                         balance=10, request=command.request, request_id=command.request_id))
    await bus.publish(job)
    return job.generation_id


async def publish_job(bus: Bus, flow: Flow, request: GenerationRequest | None = None, *,
                      pass_id: str = "pass:user:tester", parent: str | None = None, price: int = 1) -> str:
    return await publish_made_job(bus, make_job(flow, request, pass_id=pass_id, parent=parent, price=price))


async def collect(bus: Bus, generation_id: str, timeout: float = 30.0) -> Events:
    """Follow the generation's events until done/failed (bounded by `timeout`)."""
    events = Events()

    async def follow() -> None:
        async for _seq, msg in bus.follow(generation_events(generation_id)):
            events.messages.append(msg)
            if isinstance(msg, GenerationDone | GenerationFailed):
                return

    try:
        await asyncio.wait_for(follow(), timeout)
    except TimeoutError as exc:
        seen = [type(m).__name__ + ":" + getattr(m, "step_type", "") for m in events.messages]
        raise AssertionError(f"generation {generation_id} did not finish in {timeout}s; saw {seen}") from exc
    return events


def png_bytes(colour: tuple[int, int, int], size: tuple[int, int] = (96, 64)) -> bytes:
    image = Image.new("RGB", size, colour)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


async def upload(settings: Settings, colour: tuple[int, int, int]) -> str:
    """Put a real PNG in the asset store the pipeline reads from; its public URL."""
    stored = await build_asset_store(settings).put_bytes(png_bytes(colour), folder="uploads",
                                                         content_type="image/png")
    return stored.url


@pytest.fixture
def replicate_server() -> Iterator[ReplicateServer]:
    with ReplicateServer() as server:
        assert isinstance(server, ReplicateServer)
        yield server

