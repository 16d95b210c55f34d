"""What a step sees: the job, the run state, the config snapshot, and where to write.

A step fills `input` as soon as it knows something and `output` when it has a
result, so a failure still records what was fed to the provider. It never
publishes its own record: the runner does, after checkpointing it. Every provider
call goes through `provider_call`, so the step's `timing.provider_ms` says how much
of the step was the provider's and how much was ours.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypedDict, TypeVar

from libs.assets import StoredAsset, safe_key
from libs.schemas import GenerationJob, LikeList, MmaStatus
from services.pipeline.config import ActiveConfig
from services.pipeline.deps import PipelineDeps
from services.pipeline.state import MmaVars, Prep, RunState, StepArg

StartedHook = Callable[["StepContext", str], Awaitable[None]]
T = TypeVar("T")


class ConfigRef(TypedDict):
    """Which config row a step used (recorded in the step and in the ops detail)."""

    key: str
    version: int
    id: str


@functools.cache  # a few step types, asked twice per step
def status_for(step_type: str) -> MmaStatus:
    """The generation status while a step of this type runs."""
    if step_type.startswith("postscan"):
        return MmaStatus.POSTSCAN
    if step_type.startswith(("scan_", "like_history")):
        return MmaStatus.SCANNING
    if "_generate" in step_type:
        return MmaStatus.GENERATING
    return MmaStatus.PROMPTING


@dataclass
class StepContext:
    deps: PipelineDeps
    job: GenerationJob
    state: RunState
    config: ActiveConfig
    step_no: int
    step_type: str
    arg: StepArg
    on_started: StartedHook
    likes: LikeList | None = None  # the like window, when the run's start read brought it
    input: dict[str, object] = field(default_factory=dict)  # what the step fed its provider (recorded as is)
    output: dict[str, object] = field(default_factory=dict)
    provider: str | None = None
    model: str | None = None
    lines: list[str] = field(default_factory=list)
    ctx_ref: ConfigRef | None = None  # the context used
    settings_ref: ConfigRef | None = None  # the preset used
    provider_s: float = 0.0  # time spent inside provider calls
    kept: dict[str, bytes] = field(default_factory=dict)  # the run's last stored output by URL, for the next step
    uploads: list[asyncio.Task[StoredAsset]] = field(default_factory=list)  # outputs still being stored

    async def provider_call(self, call: Awaitable[T]) -> T:
        """Await a provider call, counting its time (failed or not) as the provider's."""
        started = time.perf_counter()
        try:
            return await call
        finally:
            self.provider_s += time.perf_counter() - started

    def store_output(self, data: bytes, *, key: str, content_type: str) -> StoredAsset:
        """Where the output will be, its upload started and left running: the runner holds the checkpoint
        that records this step until the upload is done, so nothing names a file not yet stored (the
        next step reads the bytes from `kept`; behind a remote store the upload hides behind it)."""
        store = self.deps.store
        key = safe_key(key)
        self.uploads.append(asyncio.create_task(store.put_bytes(data, folder=key.split("/", 1)[0],
                                                                content_type=content_type, key=key)))
        return StoredAsset(key=key, url=store.public_url(key), content_type=content_type, bytes=len(data))

    @property
    def vars(self) -> MmaVars:
        return self.state.vars

    @property
    def prep(self) -> Prep:
        return self.state.prep

    @property
    def constraints(self) -> list[str]:
        return list(self.prep.get("constraints", []))

    def use_ctx(self, name: str) -> str:
        """Record the context template (key/version/id) in the step and the vars; return its text."""
        entry, system = self.config.ctx(name)
        self.ctx_ref = ConfigRef(key=entry.key, version=entry.version, id=entry.id)
        self.input.update(ctx_key=entry.key, ctx_version=entry.version, ctx_id=entry.id)
        self.vars["meta"]["ctx_versions"][name] = entry.version
        return system


StepFn = Callable[[StepContext], Awaitable[None]]
