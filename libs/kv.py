"""JetStream KV buckets opened with their limits from settings (max bytes, max age).

A bucket that already exists (an older deployment made it without limits) has its
stream brought up to date, so every bucket stays bounded whatever created it first.
"""

from __future__ import annotations

import contextlib

import nats.js.errors
from nats.js import JetStreamContext, api
from nats.js.kv import KeyValue


def kv_stream(bucket: str) -> str:
    return f"KV_{bucket}"


async def open_bucket(js: JetStreamContext, bucket: str, *, max_bytes: int, ttl_s: float | None,
                      replicas: int, history: int = 1) -> KeyValue:
    """The bucket, created with `max_bytes` and `ttl_s` (the max age of an entry, None = forever)
    or updated to them. Writes past `max_bytes` are refused (KV buckets discard new), which an
    alert sees, rather than silently dropping the oldest entries of runs still going. `replicas` is
    the streams' setting (3 on a production cluster); a bucket made at another count is moved to it."""
    try:
        kv = await js.key_value(bucket)
    except nats.js.errors.BucketNotFoundError:
        config = api.KeyValueConfig(bucket=bucket, history=history, ttl=ttl_s, max_bytes=max_bytes,
                                    replicas=replicas)
        with contextlib.suppress(nats.js.errors.BadRequestError):  # another process created it meanwhile
            return await js.create_key_value(config)
        kv = await js.key_value(bucket)
    info = await js.stream_info(kv_stream(bucket))
    current = info.config
    wanted_age = float(ttl_s or 0.0)
    if current.max_bytes != max_bytes or abs(float(current.max_age or 0.0) - wanted_age) > 0.001 \
            or not current.allow_msg_ttl or current.num_replicas != replicas:
        await js.update_stream(current.evolve(max_bytes=max_bytes, max_age=wanted_age or None, allow_msg_ttl=True,
                                              num_replicas=replicas))
    return kv
