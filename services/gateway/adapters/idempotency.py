"""`Idempotency-Key`: the same key and body give the same generation, a new body is a 409.

The record lives in a JetStream KV bucket with a TTL; `create` is atomic across
gateway replicas, so ten concurrent requests with one key agree on one winner.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass

import nats.js.errors
import orjson
from nats.js.kv import KeyValue

from libs.bus import Bus
from libs.errors import ConflictError
from libs.kv import open_bucket

BUCKET = "MMA_IDEMPOTENCY"
TTL_S = 24 * 3600.0
_NAMESPACE = uuid.UUID("6c1b8f8e-3c6e-4a53-9a55-0f7d3e1a2b44")


@dataclass(frozen=True)
class Claim:
    generation_id: str
    is_new: bool  # False: an earlier request with this key already sent the command


def generation_id_for(pass_id: str, key: str) -> str:
    """Stable generation id of (pass id, key): a retry after a lost answer finds the same one."""
    return uuid.uuid5(_NAMESPACE, f"{pass_id}\n{key}").hex


def body_hash(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


class IdempotencyStore:
    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    @classmethod
    async def open(cls, bus: Bus, replicas: int = 1) -> IdempotencyStore:
        """The bucket, bounded by `MMA_IDEMPOTENCY_MAX_BYTES` (keys expire after a day)."""
        kv = await open_bucket(bus.js, BUCKET, max_bytes=bus.settings.idempotency_max_bytes, ttl_s=TTL_S,
                               replicas=replicas)
        return cls(kv)

    async def claim(self, pass_id: str, key: str, digest: str) -> Claim:
        """Record (pass id, key) -> generation once; ConflictError when the key was used for another body."""
        generation_id = generation_id_for(pass_id, key)
        kv_key = hashlib.sha256(f"{pass_id}\n{key}".encode()).hexdigest()
        record = orjson.dumps({"generation_id": generation_id, "body_hash": digest})
        try:
            await self._kv.create(kv_key, record)
            return Claim(generation_id, is_new=True)
        except nats.js.errors.KeyWrongLastSequenceError:
            pass
        entry = await self._kv.get(kv_key)
        stored = orjson.loads(entry.value or b"{}")
        if stored.get("body_hash") != digest:
            raise ConflictError("This Idempotency-Key was already used with a different request body.",
                                code="IDEMPOTENCY_CONFLICT")
        return Claim(str(stored.get("generation_id") or generation_id), is_new=False)
