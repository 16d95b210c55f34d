"""The JetStream streams every service ensures at start-up, each bounded by settings."""

from __future__ import annotations

import contextlib

import nats.js.errors
from nats.js import JetStreamContext, api

from libs import deadletter
from libs.schemas import STREAM_SUBJECTS, Stream
from libs.settings import Settings
from libs.transient import NATS_AWAY

AWAY_OR_MISSING: tuple[type[BaseException], ...] = (nats.js.errors.NotFoundError, *NATS_AWAY)


def stream_config(settings: Settings, stream: Stream) -> api.StreamConfig:
    """EVENTS drops its oldest past its age or bytes (the ledger projected them long ago); a full work
    queue refuses new work instead of dropping accepted work."""
    is_events = stream is Stream.EVENTS
    s = settings
    return api.StreamConfig(
        name=stream.value,
        subjects=STREAM_SUBJECTS[stream],
        retention=api.RetentionPolicy.LIMITS if is_events else api.RetentionPolicy.WORK_QUEUE,
        storage=api.StorageType.FILE,
        max_age=float(s.events_max_age_days * 86400) if is_events else s.work_queue_max_age_s,
        max_bytes=s.events_max_bytes if is_events else s.work_queue_max_bytes,
        discard=api.DiscardPolicy.OLD if is_events else api.DiscardPolicy.NEW,
        duplicate_window=s.dedupe_window_s,
        num_replicas=s.stream_replicas,
        max_consumers=s.events_max_consumers if is_events else None,
        allow_direct=True,
    )


async def ensure_streams(js: JetStreamContext, settings: Settings) -> None:
    """Create COMMANDS, JOBS, EVENTS and the dead letters, or bring their config up to date (idempotent)."""
    for stream in Stream:
        config = stream_config(settings, stream)
        try:
            await js.stream_info(stream.value)
        except nats.js.errors.NotFoundError:
            with contextlib.suppress(nats.js.errors.BadRequestError):  # another service created it first
                await js.add_stream(config)
            continue
        await js.update_stream(config)
    await deadletter.ensure_stream(js, settings)


async def streams_present(js: JetStreamContext) -> bool:
    """Whether every stream exists (False too while NATS is away): readiness, not a health verdict."""
    try:
        for stream in Stream:
            await js.stream_info(stream.value)
    except AWAY_OR_MISSING:
        return False
    return True
