"""Containers mode for real: NATS and Postgres in containers (testcontainers, host network), the
product's four services as processes on top, a still through the gateway."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx

from libs.containerinfra import ContainerInfra, NatsContainer, PostgresContainer, nats_info
from libs.devinfra import RESERVED_PORTS
from tests.conftest import Services
from tests.dockerengine import DockerEngine
from tests.gateway.support import png_bytes, read_sse
from tests.helpers import wait_for


def _inspect(container: Any) -> dict[str, Any]:
    wrapped = container.get_wrapped_container()
    wrapped.reload()
    return dict(wrapped.attrs)


async def test_a_still_reaches_done_and_is_debited_once(
    engine: DockerEngine, nats_container: NatsContainer, pg_container: PostgresContainer, services: Services,
) -> None:
    """The settings point at the containers; create a still through the gateway; SSE ends in done; one debit."""
    for server, image in ((nats_container, engine.nats_image), (pg_container, engine.postgres_image)):
        attrs = _inspect(server.container)
        assert attrs["Config"]["Image"] == image and attrs["HostConfig"]["NetworkMode"] == "host"
        assert server.port not in RESERVED_PORTS
    assert services.settings.nats_url == nats_container.url
    assert f":{pg_container.port}/" in (services.settings.database_url or "")

    await services.start_all(welcome_credits=20)
    pass_id = "pass:anon:containers-1"
    h = {"X-Mina-Pass-Id": pass_id}
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30.0) as client:
        upload = await client.post("/api/upload", files={"file": ("p.png", png_bytes(), "image/png")}, headers=h)
        assert upload.status_code == 200, upload.text
        created = await client.post("/mma/still/create", headers=h, json={
            "passId": pass_id, "assets": {"product_image_url": upload.json()["publicUrl"]},
            "inputs": {"brief": "a glass bottle on linen", "aspect_ratio": "1:1"}})
        assert created.status_code == 200, created.text
        gid = created.json()["generation_id"]
        sse = await read_sse(client, created.json()["sse_url"], timeout=90)
        assert sse.closed and sse.events[-1].event == "done", [e.event for e in sse.events]
        still = (await client.get(f"/mma/generations/{gid}", headers=h)).json()
        assert still["state"] == "done" and still["outputs"]["seedream_image_url"]

        conn = await asyncpg.connect(services.settings.database_url)
        try:
            async def debits() -> list[Any]:
                return list(await conn.fetch(
                    "select mg_delta from mega_generations where mg_record_type = 'credit_transaction' "
                    "and mg_pass_id = $1 and mg_generation_id = $2 and mg_delta < 0", pass_id, gid))

            rows = await wait_for(debits, 20, what="the still's debit")
        finally:
            await conn.close()
        assert len(rows) == 1 and rows[0]["mg_delta"] < 0
        balance = (await client.get("/credits/balance", params={"passId": pass_id}, headers=h)).json()
        assert balance["balance"] == 20 + rows[0]["mg_delta"]


def test_make_up_containers_start_answer_and_leave_nothing(engine: DockerEngine) -> None:
    """`MMA_INFRA=containers` (libs/devstack.py): a NATS and a Postgres container, ready when start returns
    (JetStream on, a real query answered), removed by stop."""
    infra = ContainerInfra(engine.nats_image, engine.postgres_image, "mina").start()
    try:
        assert infra.nats is not None and infra.pg is not None
        assert nats_info(infra.nats.port)["jetstream"]
        assert infra.pg.psql("select current_database()").strip() == "mina"
        assert infra.database_url.endswith("/mina") and infra.nats_url == infra.nats.url
        ids = [part.container.get_container_id() for part in (infra.nats, infra.pg)]
        client = infra.nats.container.get_docker_client().client
    finally:
        infra.stop()
    left = {c.id for c in client.containers.list(all=True)}
    assert not left & set(ids)
