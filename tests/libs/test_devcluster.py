"""The embedded 3-node JetStream cluster: every stream and KV bucket at R3, a node lost and back."""

from __future__ import annotations

from pathlib import Path

import pytest

from libs.bus import Bus
from libs.bus.connection import server_list
from libs.bus.retry import retried
from libs.devcluster import NatsCluster, caught_up
from libs.kv import kv_stream, open_bucket
from libs.schemas import ScanLine, Stream
from libs.settings import Settings
from libs.transient import NATS_AWAY
from tests.helpers import wait_for


def test_the_nats_url_may_list_every_server_of_a_cluster() -> None:
    assert server_list("nats://a:1, nats://b:2,,nats://c:3") == ["nats://a:1", "nats://b:2", "nats://c:3"]
    assert server_list("nats://a:1") == ["nats://a:1"]
    with pytest.raises(ValueError, match="no server"):
        server_list(" , ")


async def test_replicated_streams_survive_a_node_killed_and_restarted(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "cluster").start()
    try:
        assert len(cluster.url.split(",")) == 3
        settings = Settings(_env_file=None, stream_replicas=3)  # type: ignore[call-arg]
        bus = await Bus.connect(settings, cluster.url, "t")
        await bus.ensure_streams()
        kv = await open_bucket(bus.js, "MMA_T", max_bytes=1 << 20, ttl_s=None, replicas=settings.stream_replicas)
        for info in await bus.js.streams_info():  # the work streams, EVENTS, the dead letters, the bucket
            assert info.config.num_replicas == 3, info.config.name
        assert {kv_stream("MMA_T"), Stream.EVENTS.value} <= {i.config.name for i in await bus.js.streams_info()}

        victim = cluster.node((await bus.js.stream_info(Stream.EVENTS.value)).cluster.leader or "")  # type: ignore[union-attr]
        ports = (victim.port, victim.route_port)
        victim.kill()
        # the leader of EVENTS is gone: the publish waits for the election (retried), nothing is refused
        await bus.publish(ScanLine(generation_id="g", pass_id="p", index=0, text="kept"))
        # the bucket's stream may have lost its leader with it (its own election): a write retried as the
        # bus retries one (NATS away), until it lands
        await retried(lambda: kv.put("k", b"v"), on=lambda exc: isinstance(exc, NATS_AWAY), timeout_s=30, wait_s=0.1)
        cluster.restart(victim)
        assert (victim.port, victim.route_port) == ports
        await wait_for(lambda: caught_up(bus.js, victim.name), 30, interval=0.1, what=f"{victim.name} caught up")
        info = await bus.js.stream_info(Stream.EVENTS.value)
        assert info.state.messages == 1
        assert (await kv.get("k")).value == b"v"
        await bus.close()
    finally:
        cluster.kill()
