"""Every service answers /healthz, /readyz and /metrics, and stops cleanly on SIGTERM."""

from __future__ import annotations

import httpx
import pytest

from libs.devinfra import free_port
from tests.conftest import Services


@pytest.mark.parametrize("name", ["ledger", "billing", "pipeline"])
async def test_health_readiness_metrics_and_graceful_stop(services: Services, name: str) -> None:
    if name != "ledger":
        await services.start("ledger")
    port = free_port()
    proc = await services.start(name, health_port=port)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        assert (await client.get("/healthz")).json() == {"ok": True}
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json() == {"ok": True}
        metrics = (await client.get("/metrics")).text
        assert "mina_bus_messages_total" in metrics and "mina_dead_letters_total" in metrics
        assert (await client.get("/nope")).status_code == 404
    assert await proc.stop() == 0
    events = [e.get("event") for e in proc.log_lines()]
    assert events.index("service.stopping") < events.index("service.stopped")
