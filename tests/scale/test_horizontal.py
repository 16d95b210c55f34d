"""Horizontal scale, proven on one machine: 2 gateways, 3 pipelines, 2 billing, 2 ledgers.

Pull consumers share the work queues and request/reply subjects are queue groups, so
more copies of a service share its work without any coordination of ours; every
handler is idempotent, so nothing is done twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import asyncpg
import httpx
import pytest

from libs.devinfra import free_port
from libs.schemas import Reconcile, ReconcileReport
from tests.conftest import Services
from tests.helpers import wait_for

GENERATIONS = 200
CUSTOMERS = 20


@pytest.mark.slow
async def test_two_hundred_generations_across_a_scaled_fleet(services: Services, database_url: str, bus: Any) -> None:
    for _ in range(2):
        await services.start("ledger")
    for _ in range(2):
        await services.start("billing", welcome_credits=GENERATIONS // CUSTOMERS)
    pipelines = [await services.start("pipeline") for _ in range(3)]
    second_port = free_port()
    gateways = [
        await services.start("gateway", welcome_credits=GENERATIONS // CUSTOMERS),
        await services.start("gateway", welcome_credits=GENERATIONS // CUSTOMERS, gateway_port=second_port),
    ]
    bases = [services.gateway_url, f"http://127.0.0.1:{second_port}"]
    assert all(g.is_running for g in gateways)

    limit = asyncio.Semaphore(32)

    async def create(client: httpx.AsyncClient, n: int) -> str:
        async with limit:
            answer = await client.post(
                f"{bases[n % 2]}/mma/still/create",
                json={"passId": f"pass:anon:scale-{n % CUSTOMERS}", "inputs": {"brief": f"scene {n}"}},
            )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["generation_id"])

    async with httpx.AsyncClient(timeout=60) as client:
        ids = await asyncio.gather(*(create(client, n) for n in range(GENERATIONS)))
    assert len(set(ids)) == GENERATIONS

    conn = await asyncpg.connect(database_url)
    try:
        async def all_done() -> bool:
            done = await conn.fetchval(
                "select count(*) from mega_generations where mg_record_type = 'generation' and mg_mma_status = 'done'"
            )
            return int(done) == GENERATIONS

        await wait_for(all_done, timeout=240, interval=0.5, what=f"{GENERATIONS} generations done")
        debits = await conn.fetch(
            "select mg_generation_id, count(*) as n from mega_generations where mg_record_type = 'credit_transaction'"
            " and mg_delta < 0 group by 1"
        )
        assert len(debits) == GENERATIONS and all(row["n"] == 1 for row in debits)
        balances = await conn.fetch(
            "select mg_pass_id, mg_credits from mega_customers where mg_pass_id like 'pass:anon:scale-%'"
        )
        assert len(balances) == CUSTOMERS and all(row["mg_credits"] == 0 for row in balances)
    finally:
        await conn.close()

    finished: Counter[str] = Counter()
    per_pipeline = []
    for proc in pipelines:
        mine = [e["generation_id"] for e in proc.log_lines() if e.get("event") == "pipeline.generation_done"]
        finished.update(mine)
        per_pipeline.append(len(mine))
    assert set(finished) == set(ids), "some generation was not finished by any pipeline"
    assert max(finished.values()) == 1, "a generation was run to the end twice"
    assert all(count > 0 for count in per_pipeline), f"work was not spread: {per_pipeline}"

    report = await bus.request(Reconcile(stuck_after_s=900, public_base=services.settings.assets_base_url),
                               ReconcileReport, timeout=60)
    assert report.ok, report.breaches[:5]
    print(f"scale: {GENERATIONS} generations over 3 pipelines {per_pipeline}, 2 gateways, reconcile clean")
