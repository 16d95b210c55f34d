"""The product image really serving: the migrate job, the four services from the one image on the
host network (NATS and Postgres are the tier's containers on loopback ports), a still created
through the containerised gateway, and SIGTERM (`docker stop`) draining a generation in flight."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from libs.containerinfra import NatsContainer, PostgresContainer
from libs.devinfra import free_port
from tests.conftest import _admin_exec
from tests.containers.product import Container, Fleet, fleet, product_image  # noqa: F401
from tests.gateway.support import read_sse
from tests.helpers import wait_for

WELCOME = 3
SERVICES = ("ledger", "billing", "pipeline", "gateway")


def service_env(nats: NatsContainer, database_url: str, gateway_port: int) -> dict[str, str]:
    return {
        "MMA_NATS_URL": nats.url,
        "MMA_DATABASE_URL": database_url,
        "MMA_GATEWAY_HOST": "127.0.0.1",
        "MMA_GATEWAY_PORT": str(gateway_port),
        "MMA_PUBLIC_URL": f"http://127.0.0.1:{gateway_port}",
        "MMA_PROVIDER": "offline",
        "MMA_WELCOME_CREDITS": str(WELCOME),
        # every offline provider call takes a while: a generation is still running when its pipeline is stopped
        "MMA_OFFLINE_LATENCY_MS": "700",
        "MMA_ADMIN_TOKEN": "container-admin-token",
        "MMA_EVENT_LOOP": "uvloop",
        # billing does not start without a shop; this one is down (checkout would answer 503 SHOPIFY_UNREACHABLE)
        "MMA_SHOPIFY_STORE_DOMAIN": f"http://127.0.0.1:{free_port()}",
        "MMA_SHOPIFY_ADMIN_TOKEN": "shpat_container_shop_down",
    }


@pytest.fixture
async def empty_database_url(pg_container: PostgresContainer) -> str:
    """A database with no tables in the tier's Postgres container: the migrate job's to fill."""
    name = f"e_{uuid.uuid4().hex[:12]}"
    await _admin_exec(pg_container, f"create database {name}")
    return pg_container.dsn(name)


async def debits_and_refunds(conn: asyncpg.Connection, gid: str) -> tuple[int, int]:
    rows = await conn.fetch("select mg_delta from mega_generations where mg_record_type = 'credit_transaction'"
                            " and mg_generation_id = $1", gid)
    return sum(1 for r in rows if r["mg_delta"] < 0), sum(1 for r in rows if r["mg_delta"] > 0)


async def status_of(conn: asyncpg.Connection, gid: str) -> str | None:
    value = await conn.fetchval("select mg_mma_status from mega_generations where mg_record_type = 'generation'"
                                " and mg_generation_id = $1", gid)
    return None if value is None else str(value)


async def test_image_migrates_serves_and_drains_on_sigterm(
    fleet: Fleet, nats: NatsContainer, empty_database_url: str  # noqa: F811
) -> None:
    timings: dict[str, float] = {}
    start = time.monotonic()
    gateway_port = free_port()
    env = service_env(nats, empty_database_url, gateway_port)

    # the migrate job: the image's `services.ledger migrate` against an empty database
    migrate = await asyncio.to_thread(fleet.run, "migrate", ["services.ledger", "migrate"], env, False)
    assert migrate.state()["ExitCode"] == 0, migrate.logs()[-3000:]
    conn = await asyncpg.connect(empty_database_url)
    try:
        rows = await conn.fetch("select tablename from pg_tables where schemaname = 'public'")
        tables = {r["tablename"] for r in rows}
        assert {"mega_generations", "mega_customers"} <= tables, tables
        timings["migrate"] = time.monotonic() - start

        # the four services from the one image, each with its own health port
        containers: dict[str, Container] = {}
        for name in SERVICES:
            containers[name] = await asyncio.to_thread(
                fleet.run, name, [f"services.{name}"], {**env, "MMA_HEALTH_PORT": str(free_port())})
        for name, container in containers.items():
            await wait_for(lambda c=container: asyncio.to_thread(c.ready), timeout=180, interval=0.5,
                           what=f"{name} container ready")
        timings["services_ready"] = time.monotonic() - start

        base = f"http://127.0.0.1:{gateway_port}"
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            health = await client.get("/health")
            assert health.status_code == 200, health.text

            # the happy path through the containerised gateway
            pass_id = "pass:anon:container-happy"
            headers = {"X-Mina-Pass-Id": pass_id}
            created = await client.post("/mma/still/create", headers=headers,
                                        json={"passId": pass_id, "inputs": {"brief": "a blue vase at dawn"}})
            assert created.status_code == 200, created.text
            gid = created.json()["generation_id"]
            sse = await read_sse(client, created.json()["sse_url"], timeout=120)
            assert sse.closed and sse.named("done"), [e.event for e in sse.events]
            await wait_for(lambda: status_of(conn, gid), timeout=30, what="the done row")
            await wait_for(lambda: _is(status_of(conn, gid), "done"), timeout=30, what="done in MEGA")
            assert await debits_and_refunds(conn, gid) == (1, 0)
            balance = await conn.fetchval("select mg_credits from mega_customers where mg_pass_id = $1", pass_id)
            assert balance == WELCOME - 1
            timings["happy_path"] = time.monotonic() - start

            # SIGTERM with a generation in flight: the pipeline finishes the job in hand, then exits 0
            created = await client.post("/mma/still/create", headers=headers,
                                        json={"passId": pass_id, "inputs": {"brief": "the same vase at night"}})
            assert created.status_code == 200, created.text
            inflight = created.json()["generation_id"]

            async def started() -> bool:
                return bool(await conn.fetchval(
                    "select count(*) from mega_generations where mg_record_type = 'mma_step'"
                    " and mg_generation_id = $1", inflight))

            await wait_for(started, timeout=60, interval=0.1, what="the second generation running")
            assert await status_of(conn, inflight) != "done"
            stop_start = time.monotonic()
            pipeline = containers["pipeline"]
            await asyncio.to_thread(fleet.engine.run, "stop", "-t", "60", pipeline.name)
            stopped_in = time.monotonic() - stop_start
            state = pipeline.state()
            assert state["ExitCode"] == 0, f"not a graceful exit: {state}\n{pipeline.logs()[-3000:]}"
            events = pipeline.events()
            names = [(e.get("event"), e.get("generation_id")) for e in events]
            assert names.count(("pipeline.generation_done", inflight)) == 1, "the job in hand was not finished"
            # finished after the SIGTERM arrived: the drain did it, not luck
            stopping = names.index(("service.stopping", None))
            assert names.index(("pipeline.generation_done", inflight)) > stopping, names[stopping - 3:]
            assert ("service.stopped", None) in names
            await wait_for(lambda: _is(status_of(conn, inflight), "done"), timeout=30, what="in-flight done")
            assert await debits_and_refunds(conn, inflight) == (1, 0)
            balance = await conn.fetchval("select mg_credits from mega_customers where mg_pass_id = $1", pass_id)
            assert balance == WELCOME - 2
            timings["drain"] = stopped_in
    finally:
        await conn.close()
    print(f"\nimage test: migrate {timings['migrate']:.1f} s, four services ready at "
          f"{timings['services_ready']:.1f} s, happy path done at {timings['happy_path']:.1f} s, "
          f"docker stop drained the in-flight generation in {timings['drain']:.1f} s")


async def _is(value: Any, expected: str) -> bool:
    return bool(await value == expected)
