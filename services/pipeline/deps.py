"""What the pipeline's handlers need, built once in `app.setup` and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field

from libs.assets import AssetStore
from libs.bus import Bus
from libs.settings import Settings
from services.pipeline.adapters.protocols import Providers
from services.pipeline.checkpoint import CheckpointStore
from services.pipeline.control import RunRegistry, StartGate
from services.pipeline.slots import CustomerSlots

POSTSCAN_VIDEO = True  # postscan of a video output is on by default


@dataclass(frozen=True)
class PipelineDeps:
    settings: Settings
    bus: Bus
    store: AssetStore
    providers: Providers
    checkpoints: CheckpointStore
    postscan_video: bool = POSTSCAN_VIDEO
    slots: CustomerSlots | None = None  # None: no per-customer limit (unit tests)
    runs: RunRegistry = field(default_factory=RunRegistry)
    start_gate: StartGate = field(default_factory=lambda: StartGate(0))  # 0: none (unit tests)
