"""Compose for real: deploy/compose.yaml with the host-network override brings up NATS, Postgres,
the migrate job and the four services from the product image; `--scale pipeline=3` spreads the
work (each generation runs once, on more than one copy); `down -v` leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml

from libs.devinfra import free_port
from tests.containers.product import ROOT, ProductImage, product_image  # noqa: F401
from tests.helpers import wait_for

GENERATIONS = 12
CUSTOMERS = 4
PIPELINES = 3
# on the host network the gateway's service is gateway-host (deploy/compose.host.yaml says why)
SERVICES = ("ledger", "billing", "pipeline", "gateway-host")


def compose_command() -> list[str]:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return ["docker", "compose"]
    pytest.skip("no compose client (scripts/system-deps.sh installs Debian's docker-compose)")


def settings_override(path: Path) -> Path:
    """The test's own settings on top of the two deploy files: offline provider, slow enough calls
    that the copies share the work, a few credits per customer, no restarts hiding a crash."""
    env = {"MMA_PROVIDER": "offline", "MMA_OFFLINE_LATENCY_MS": "250", "MMA_PIPELINE_CONCURRENCY": "2",
           "MMA_WELCOME_CREDITS": str(GENERATIONS // CUSTOMERS), "MMA_MAX_RUNNING_PER_CUSTOMER": "0"}
    path.write_text(yaml.safe_dump({"services": {name: {"environment": env, "restart": "no"} for name in SERVICES}}))
    return path


def _events(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                out.append(entry)
    return out


async def test_compose_scales_pipelines_and_leaves_nothing_behind(
    product_image: ProductImage, tmp_path: Path  # noqa: F811
) -> None:
    engine = product_image.engine
    start = time.monotonic()
    project = f"minatest{uuid.uuid4().hex[:8]}"
    ports = {name: free_port() for name in ("NATS", "NATS_MONITOR", "POSTGRES", "GATEWAY", "LEDGER_HEALTH",
                                            "BILLING_HEALTH", "GATEWAY_HEALTH")}
    env = {**engine.env, "MINA_IMAGE": product_image.name, "MINA_NATS_IMAGE": product_image.nats_image,
           "MINA_POSTGRES_IMAGE": product_image.postgres_image,
           **{f"MINA_{name}_PORT": str(port) for name, port in ports.items()},
           # compose refuses to start billing without a shop; this one is down (nothing here buys)
           "MMA_SHOPIFY_STORE_DOMAIN": f"http://127.0.0.1:{free_port()}", "MMA_SHOPIFY_ADMIN_TOKEN": "shpat_shop_down"}
    files = [ROOT / "deploy" / "compose.yaml", ROOT / "deploy" / "compose.host.yaml",
             settings_override(tmp_path / "compose.test.yaml")]
    base = [*compose_command(), "-p", project, *(arg for f in files for arg in ("-f", str(f)))]

    def compose(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([*base, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)
        assert done.returncode == 0, f"compose {' '.join(args)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
        return done

    def project_containers(service: str | None = None) -> list[str]:
        filters = ["--filter", f"label=com.docker.compose.project={project}"]
        if service:
            filters += ["--filter", f"label=com.docker.compose.service={service}"]
        return engine.run("ps", "-a", *filters, "--format", "{{.Names}}").stdout.split()

    def logs(name: str) -> str:
        done = engine.run("logs", name, check=False)
        return done.stdout + done.stderr

    figures: dict[str, float] = {}
    try:
        await asyncio.to_thread(compose, "up", "-d", "--no-build", "--scale", f"pipeline={PIPELINES}")
        figures["up"] = time.monotonic() - start

        def all_ready() -> bool:
            names = [n for s in SERVICES for n in project_containers(s)]
            ready = [n for n in names if any(e.get("event") == "service.ready" for e in _events(logs(n)))]
            return len(names) == len(SERVICES) - 1 + PIPELINES and len(ready) == len(names)

        await wait_for(lambda: asyncio.to_thread(all_ready), timeout=240, interval=1.0, what="the services ready")
        figures["ready"] = time.monotonic() - start

        base_url = f"http://127.0.0.1:{ports['GATEWAY']}"
        async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
            async def create(n: int) -> str:
                pass_id = f"pass:anon:compose-{n % CUSTOMERS}"
                answer = await client.post("/mma/still/create", headers={"X-Mina-Pass-Id": pass_id},
                                           json={"passId": pass_id, "inputs": {"brief": f"scene {n}"}})
                assert answer.status_code == 200, answer.text
                return str(answer.json()["generation_id"])

            created_at = time.monotonic()
            ids = await asyncio.gather(*(create(n) for n in range(GENERATIONS)))
        assert len(set(ids)) == GENERATIONS

        conn = await asyncpg.connect(f"postgresql://mina:mina@127.0.0.1:{ports['POSTGRES']}/mina")
        try:
            async def all_done() -> bool:
                done = await conn.fetchval("select count(*) from mega_generations where mg_record_type = 'generation'"
                                           " and mg_mma_status = 'done' and mg_generation_id = any($1)", ids)
                return int(done) == GENERATIONS

            await wait_for(all_done, timeout=180, interval=0.5, what=f"{GENERATIONS} generations done")
            figures["generations"] = time.monotonic() - created_at
            debits = await conn.fetch("select mg_generation_id, count(*) as n from mega_generations where"
                                      " mg_record_type = 'credit_transaction' and mg_delta < 0 group by 1")
            assert sorted(r["mg_generation_id"] for r in debits) == sorted(ids)
            assert all(r["n"] == 1 for r in debits)
            balances = await conn.fetch("select mg_credits from mega_customers where mg_pass_id like"
                                        " 'pass:anon:compose-%'")
            assert len(balances) == CUSTOMERS and all(r["mg_credits"] == 0 for r in balances)
        finally:
            await conn.close()

        # which copy ran each generation: each pipeline container's own log
        finished: Counter[str] = Counter()
        per_copy: dict[str, int] = {}
        for name in project_containers("pipeline"):
            mine = [e["generation_id"] for e in _events(logs(name)) if e.get("event") == "pipeline.generation_done"]
            finished.update(mine)
            per_copy[name] = len(mine)
        assert set(finished) == set(ids), "a generation was finished by no pipeline copy"
        assert max(finished.values()) == 1, f"a generation was run to the end twice: {finished.most_common(3)}"
        assert sum(1 for n in per_copy.values() if n > 0) >= 2, f"work was not spread: {per_copy}"
    except BaseException:
        artifacts = ROOT / "test-artifacts" / "logs" / "compose"
        artifacts.mkdir(parents=True, exist_ok=True)
        for name in project_containers():
            (artifacts / f"{name}.log").write_text(logs(name))
        raise
    finally:
        down_start = time.monotonic()
        await asyncio.to_thread(compose, "down", "-v", "--remove-orphans", "-t", "30")
        figures["down"] = time.monotonic() - down_start
    label = f"label=com.docker.compose.project={project}"
    assert project_containers() == []
    assert engine.run("volume", "ls", "-q", "--filter", label).stdout.split() == []
    assert engine.run("network", "ls", "-q", "--filter", label).stdout.split() == []
    print(f"\ncompose: {GENERATIONS} generations over {PIPELINES} pipeline copies "
          f"{sorted(per_copy.values(), reverse=True)} in {figures['generations']:.1f} s; up {figures['up']:.1f} s, "
          f"all ready at {figures['ready']:.1f} s, down -v {figures['down']:.1f} s, nothing left behind")
