"""Who waits for a customer slot: the key layout of the `MMA_SLOTS` bucket, shared by its writer
(the pipeline, `services/pipeline/slots.py`) and its reader (billing's stuck sweeper).

A generation waiting for a slot is not stuck: it is in line behind the customer's own
running generations, and its waiter refreshes its entry on every poll.
"""

from __future__ import annotations

import hashlib
import time

import nats.errors
import nats.js.errors
import orjson
from nats.js import JetStreamContext

from libs.errors import ServiceUnavailableError
from libs.settings import Settings

BUCKET = "MMA_SLOTS"
STALE_AFTER_POLLS = 20
STALE_MIN_S = 5.0


def pass_key(pass_id: str) -> str:
    """KV keys allow few characters; a pass id (`pass:anon:<uuid>`) becomes a short digest."""
    return hashlib.sha256(pass_id.encode()).hexdigest()[:24]


def stale_after_s(settings: Settings) -> float:
    """A waiter not seen for this long stopped polling (a crash, its job deleted): it no longer counts."""
    return max(STALE_MIN_S, STALE_AFTER_POLLS * max(0.01, settings.slot_poll_interval_s))


async def is_waiting_for_slot(js: JetStreamContext, settings: Settings, pass_id: str, generation_id: str) -> bool:
    """True while `generation_id` is a live entry of its customer's waiting list."""
    try:
        kv = await js.key_value(BUCKET)
        entry = await kv.get(f"w.{pass_key(pass_id)}")
    except (nats.js.errors.BucketNotFoundError, nats.js.errors.KeyNotFoundError):
        return False
    except (nats.errors.Error, TimeoutError) as exc:
        raise ServiceUnavailableError(f"{BUCKET} not answering: {type(exc).__name__}") from exc
    waiting: dict[str, list[float]] = orjson.loads(entry.value) if entry.value else {}
    seen = waiting.get(generation_id)
    return seen is not None and time.time() - seen[1] < stale_after_s(settings)
