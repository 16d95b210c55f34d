"""The production shape of NATS: a 3-node JetStream cluster, every stream and KV bucket at R3.

The four services run on the embedded cluster (libs/devcluster.py) with `MMA_STREAM_REPLICAS=3`
and the three client URLs in `MMA_NATS_URL`. Customers send still generations one after the
other; mid-run the leader of JOBS is SIGKILLed, started again on its ports and store, and waited
for until it is current on every stream and consumer; then another node (the new JOBS leader)
is SIGKILLed too. Every generation ends once and done (a failure would be refunded, but none is
expected: R3 rides out one node's loss), nothing is charged twice, and reconcile holds. The run
counts in the fault suite's figure line.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import nats
import pytest
from nats.js import JetStreamContext

from libs.bus.connection import server_list
from libs.devcluster import NatsCluster, caught_up
from libs.schemas import Stream
from libs.settings import Settings
from tests.conftest import Services
from tests.faults.support import DbReader, Driver, Generation, settle_and_check
from tests.faults.test_faults import BASE
from tests.helpers import wait_for

CUSTOMERS = 8
PER_CUSTOMER = 40  # at most, well inside the welcome credits
PROGRESS = 8  # generations accepted while a node is down (or just back) before the next step
BUCKETS = ("KV_MMA_IDEMPOTENCY", "KV_MMA_RUNS", "KV_MMA_SLOTS")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[NatsCluster]:
    started = NatsCluster(tmp_path / "cluster").start()
    yield started
    started.kill()


@pytest.fixture
def settings(settings: Settings, cluster: NatsCluster) -> Settings:
    """The suite's settings on the cluster: all three URLs, replicated streams."""
    return settings.model_copy(update={"nats_url": cluster.url, "stream_replicas": 3})


@pytest.fixture
async def js(cluster: NatsCluster) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(server_list(cluster.url), max_reconnect_attempts=-1, reconnect_time_wait=0.1)
    yield nc.jetstream()
    await nc.close()


async def stills(run: Driver, stop: asyncio.Event) -> None:
    """Each customer sends a still, waits until it ends, sends the next, until `stop` (a steady stream)."""
    async with httpx.AsyncClient(base_url=run.base_url, timeout=20.0) as client, DbReader(run.database_url) as db:

        async def customer(i: int) -> None:
            pass_id = run.pass_id(i)
            for n in range(PER_CUSTOMER):
                if stop.is_set():
                    return
                answer = await run.post(client, "/mma/still/create", {
                    "passId": pass_id, "inputs": {"brief": f"bottle {i}.{n} on marble", "aspect_ratio": "1:1"}},
                    pass_id, f"{run.kind}-{i}-{n}")
                run.generations.append(Generation(answer["generation_id"], "still_create", pass_id))
                await run.status_of(db, answer["generation_id"], 60)

        await asyncio.gather(*(customer(i) for i in range(CUSTOMERS)))


async def leader_of(js: JetStreamContext, stream: Stream, other_than: str | None = None) -> str:
    """The node leading `stream` (waits for one, and for it to differ from `other_than`)."""
    async def leader() -> str | None:
        info = await js.stream_info(stream.value)
        name = info.cluster.leader if info.cluster else None
        return name if name and name != other_than else None

    return str(await wait_for(leader, 30, interval=0.1, what=f"a leader of {stream.value}"))


async def test_cluster_nodes_killed_one_after_the_other(services: Services, cluster: NatsCluster,
                                                        js: JetStreamContext) -> None:
    started = time.monotonic()
    marks: dict[str, float] = {}
    await services.start_all(**BASE)
    for info in await js.streams_info():  # every stream and KV bucket the services made is at R3
        assert info.config.num_replicas == 3, (info.config.name, info.config.num_replicas)
    names = {info.config.name for info in await js.streams_info()}
    assert {s.value for s in Stream} | set(BUCKETS) <= names, names

    run = Driver(services.gateway_url, services.settings.database_url or "", "cluster_r3_two_kills")
    stop = asyncio.Event()
    task = asyncio.create_task(stills(run, stop))

    async def progress(count: int, what: str) -> None:
        target = len(run.generations) + count
        await wait_for(lambda: task.done() or len(run.generations) >= target, 60, interval=0.05, what=what)
        assert not task.done(), f"the stream of generations ended early: {task}"

    await run.submitted(CUSTOMERS)
    first = cluster.node(await leader_of(js, Stream.JOBS))
    first.kill()
    marks["first killed"] = time.monotonic() - started
    await progress(PROGRESS, f"generations with {first.name} down")
    cluster.restart(first)
    await wait_for(lambda: caught_up(js, first.name), 30, interval=0.1, what=f"{first.name} caught up")
    marks["first back, caught up"] = time.monotonic() - started
    await progress(PROGRESS, f"generations with {first.name} back")
    second = cluster.node(await leader_of(js, Stream.JOBS, other_than=first.name))
    second.kill()
    marks["second killed"] = time.monotonic() - started
    await progress(PROGRESS, f"generations with {second.name} down")
    stop.set()
    await asyncio.wait_for(task, 90)
    marks["stream stopped"] = time.monotonic() - started
    cluster.restart(second)
    await wait_for(lambda: caught_up(js, second.name), 30, interval=0.1, what=f"{second.name} caught up")
    # R3 keeps every write through one node's loss: no generation may fail for it (errors would be refunded,
    # but a failure here is the product not riding out a leader election)
    outcomes = await settle_and_check(run, services.settings, expect_errors=False)
    marks["settled, reconciled"] = time.monotonic() - started
    print(f"cluster R3: {len(run.generations)} generations {dict(outcomes)}, killed {first.name} then "
          f"{second.name}, client retries {run.retried_requests}, "
          + ", ".join(f"{what} {at:.1f}s" for what, at in marks.items()))
    assert all(node.is_running for node in cluster.nodes)
