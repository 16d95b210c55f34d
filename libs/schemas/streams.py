"""The JetStream streams, their subjects and the header that names a message's type."""

from __future__ import annotations

from enum import StrEnum

# --------------------------------------------------------------------------- streams


class Stream(StrEnum):
    COMMANDS = "MMA_COMMANDS"
    JOBS = "MMA_JOBS"
    EVENTS = "MMA_EVENTS"


STREAM_SUBJECTS: dict[Stream, list[str]] = {
    Stream.COMMANDS: ["mma.cmd.>"],
    Stream.JOBS: ["mma.job.>"],
    Stream.EVENTS: ["mma.evt.>"],
}

EVENTS_ALL = "mma.evt.>"
DEAD_LETTER_SUBJECT = "mma.evt.ops.dead_letter"
GENERATION_COMMANDS = "mma.cmd.generation.>"
GENERATION_JOBS = "mma.job.>"
FAILED_EVENTS = "mma.evt.*.failed"
CANCEL_REQUESTS = "mma.evt.*.cancel_requested"
TYPE_HEADER = "Mma-Type"


def generation_events(generation_id: str) -> str:
    """Filter subject of everything said about one generation (SSE, replay)."""
    return f"mma.evt.{generation_id}.>"


