"""Storage stays bounded: a finished run leaves nothing in the checkpoint bucket, every stream and
bucket carries the byte and age limits of its settings (also one made by an older version)."""

from __future__ import annotations

import nats.js.errors
from nats.js import api

from libs.bus import Bus
from libs.kv import kv_stream
from libs.schemas import Assets, Flow, GenerationRequest, Inputs, Stream
from libs.settings import Settings
from services.gateway.adapters.idempotency import BUCKET as IDEMPOTENCY_BUCKET
from services.pipeline.checkpoint import BUCKET, LATEST_SUFFIX, CheckpointStore
from services.pipeline.slots import BUCKET as SLOTS_BUCKET
from tests.conftest import Services
from tests.helpers import wait_for
from tests.pipeline.conftest import collect, publish_job


async def test_a_finished_run_leaves_no_checkpoint(services: Services, bus: Bus, settings: Settings) -> None:
    """Done and failed runs: both keys of each are gone soon after the end, and the bucket's stream is empty."""
    await services.start("ledger")
    await services.start("pipeline", checkpoint_final_ttl_s=1)
    done = await publish_job(bus, Flow.STILL_CREATE)
    failed = await publish_job(bus, Flow.STILL_CREATE, GenerationRequest(
        assets=Assets(product_image_url="uploads/never-uploaded.png"), inputs=Inputs(user_brief="a bottle")))
    assert (await collect(bus, done)).done is not None
    assert (await collect(bus, failed)).failed.code == "ASSET_NOT_FOUND"
    store = await CheckpointStore.open(bus.js, settings)

    async def gone(key: str) -> bool:
        try:
            await store.kv.get(key)
        except nats.js.errors.KeyNotFoundError:
            return True
        return False

    for gen in (done, failed):
        for key in (CheckpointStore.key(gen), CheckpointStore.key(gen) + LATEST_SUFFIX):
            await wait_for(lambda key=key: gone(key), 15, what=f"{key} gone")

    async def empty() -> bool:
        info = await bus.js.stream_info(kv_stream(BUCKET))
        return info.state.messages == 0 and info.state.bytes == 0

    await wait_for(empty, 15, what="the checkpoint bucket to hold nothing")


async def test_streams_and_buckets_carry_their_limits(services: Services, bus: Bus, settings: Settings) -> None:
    """EVENTS: age and bytes, oldest dropped; work queues: bytes and age, new work refused when full; KV
    buckets: bytes and age from settings."""
    for stream in Stream:
        config = (await bus.js.stream_info(stream.value)).config
        if stream is Stream.EVENTS:
            assert config.max_bytes == settings.events_max_bytes
            assert config.max_age == settings.events_max_age_days * 86400
            assert config.discard == api.DiscardPolicy.OLD
        else:
            assert config.max_bytes == settings.work_queue_max_bytes
            assert config.max_age == settings.work_queue_max_age_s
            assert config.discard == api.DiscardPolicy.NEW
    for name in ("ledger", "pipeline", "gateway"):
        await services.start(name)
    expected = {BUCKET: (settings.checkpoints_max_bytes, settings.checkpoints_max_age_s),
                SLOTS_BUCKET: (settings.slots_max_bytes, settings.slot_ttl_s),
                IDEMPOTENCY_BUCKET: (settings.idempotency_max_bytes, 86400.0)}
    for bucket, (max_bytes, max_age) in expected.items():
        config = (await bus.js.stream_info(kv_stream(bucket))).config
        assert (config.max_bytes, config.max_age) == (max_bytes, max_age), bucket
        assert config.allow_msg_ttl, bucket


async def test_a_bucket_made_without_limits_gets_them(bus: Bus, settings: Settings) -> None:
    """A checkpoint bucket an older version created (7 days, no byte limit) is brought up to the settings."""
    await bus.js.create_key_value(api.KeyValueConfig(bucket=BUCKET, history=1, ttl=7 * 86400))
    await CheckpointStore.open(bus.js, settings.model_copy(update={"checkpoints_max_bytes": 5_000_000}))
    config = (await bus.js.stream_info(kv_stream(BUCKET))).config
    assert (config.max_bytes, config.max_age) == (5_000_000, settings.checkpoints_max_age_s)
