"""While the ledger or billing restarts, the gateway answers 503 with Retry-After (or waits), never 500."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx

from libs.schemas import new_id
from tests.conftest import Services
from tests.helpers import wait_for

MMA_KEYS = {"error", "message", "status", "error_detail"}
LEGACY_KEYS = {"ok", "error", "message", "requestId"}


def new_pass() -> str:
    return f"pass:anon:{new_id()}"


class Traffic:
    """Creates (each from a new customer, so each asks billing and the ledger) and reads, in a loop."""

    def __init__(self, client: httpx.AsyncClient, generation_id: str) -> None:
        self.client = client
        self.generation_id = generation_id
        self.answers: list[tuple[str, int, dict[str, str], Any]] = []
        self.stopped = asyncio.Event()

    async def _one(self, method: str, path: str, **kwargs: Any) -> None:
        answer = await self.client.request(method, path, **kwargs)
        body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else None
        self.answers.append((path, answer.status_code, dict(answer.headers), body))

    async def run(self) -> None:
        while not self.stopped.is_set():
            await asyncio.gather(
                self._one("POST", "/mma/still/create", json={"passId": new_pass(), "inputs": {"brief": "a bottle"}}),
                self._one("GET", f"/mma/generations/{self.generation_id}"),
                self._one("GET", "/credits/balance", headers={"X-Mina-Pass-Id": new_pass()}),
            )

    def statuses(self) -> set[int]:
        return {status for _p, status, _h, _b in self.answers}

    def count(self, status: int) -> int:
        return sum(1 for _p, s, _h, _b in self.answers if s == status)


async def _restart(services: Services, name: str, traffic: Traffic) -> None:
    """SIGTERM the service, keep the traffic going until a 503 was answered, then start it again."""
    process = next(p for p in reversed(services.procs) if p.name == name and p.is_running)
    seen = traffic.count(503)
    await process.stop()
    await wait_for(lambda: traffic.count(503) > seen, 30, what=f"a 503 while {name} is down")
    await services.start(name)


async def test_no_500_while_the_ledger_and_billing_restart(services: Services) -> None:
    """Every answer during both restarts is a success, a documented refusal or a 503 with Retry-After."""
    await services.start_all(rpc_responder_wait_s=0.5)
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30) as client:
        created = await client.post("/mma/still/create", json={"passId": new_pass(), "inputs": {"brief": "a cup"}})
        assert created.status_code == 402, created.text  # no welcome credits in tests: refused, not charged
        traffic = Traffic(client, new_id())  # an unknown generation: 404 from the ledger, 503 without it
        running = asyncio.create_task(traffic.run())
        try:
            for name in ("ledger", "billing"):
                await _restart(services, name, traffic)
            after = len(traffic.answers)
            await wait_for(lambda: len(traffic.answers) > after + 6, 30, what="traffic after the restarts")
        finally:
            traffic.stopped.set()
            with contextlib.suppress(Exception):
                await running

    assert traffic.statuses() <= {200, 402, 404, 503}, sorted(traffic.statuses())
    unavailable = [(path, headers, body) for path, status, headers, body in traffic.answers if status == 503]
    assert unavailable
    for path, headers, body in unavailable:
        assert int(headers["retry-after"]) >= 1
        keys = MMA_KEYS if path.startswith("/mma/") else LEGACY_KEYS
        assert keys <= set(body), (path, body)
        if path.startswith("/mma/"):
            assert body["status"] == "error" and body["error_detail"]["code"] == body["error"]
        else:
            assert body["ok"] is False
    last = traffic.answers[-3:]
    assert all(status != 503 for _p, status, _h, _b in last), last


async def test_a_read_waits_for_a_ledger_that_is_restarting(services: Services) -> None:
    """A GET sent while the ledger is down answers 200 once the ledger is back, within the responder wait."""
    await services.start("ledger")
    await services.start("gateway", rpc_responder_wait_s=60)
    pass_id = new_pass()
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=90) as client:
        ledger = next(p for p in services.procs if p.name == "ledger")
        await ledger.stop()
        reading = asyncio.create_task(client.get("/history", headers={"X-Mina-Pass-Id": pass_id}))
        await services.start("ledger")  # seconds: the read is waiting in the gateway by then
        answer = await reading
    assert answer.status_code == 200, answer.text
    assert answer.json()["passId"] == pass_id and answer.json()["generations"] == []
