"""`make up` / `make down` as a new user runs them: the real devstack with embedded infrastructure."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from libs.devinfra import free_port
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _devstack(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "libs.devstack", command], cwd=ROOT, env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


async def test_up_serves_then_ctrl_c_stops_and_a_second_up_keeps_the_data(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMA_")}
    env.update({"MMA_STATE_DIR": str(state), "MMA_GATEWAY_PORT": str(port), "MMA_WELCOME_CREDITS": "3",
                "PYTHONPATH": str(ROOT)})
    log = tmp_path / "up.log"
    base = f"http://127.0.0.1:{port}"
    pass_id = "pass:anon:devstack-test"

    first = _devstack("up", env, log)
    try:
        await wait_for(lambda: "Mina Mind is up" in log.read_text(), timeout=120, what="first make up")
        text = log.read_text()
        assert f"{base}/docs" in text and str(state) in text and "Ctrl-C" in text
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            created = await client.post("/mma/still/create", json={"passId": pass_id, "inputs": {"brief": "a vase"}})
            assert created.status_code == 200, created.text
            gen = created.json()["generation_id"]

            async def done() -> bool:
                answer = await client.get(f"/mma/generations/{gen}")
                return answer.status_code == 200 and answer.json()["state"] == "done"

            await wait_for(done, timeout=60, what="generation done")
            balance = (await client.get("/credits/balance", params={"passId": pass_id})).json()["balance"]
            assert balance == 2
        infra: dict[str, Any] = json.loads((state / "infra.json").read_text())
        pids = [p for p in infra["pids"].values() if p]
        assert len(pids) == 6  # nats, postgres and the four services
        first.send_signal(signal.SIGINT)  # Ctrl-C
        assert first.wait(60) == 0
        assert not any(_alive(p) for p in pids), "Ctrl-C left processes running"
    finally:
        if first.poll() is None:
            first.kill()

    second = _devstack("up", env, log)
    try:
        await wait_for(lambda: log.read_text().count("Mina Mind is up") == 2, timeout=120, what="second make up")
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            again = (await client.get("/credits/balance", params={"passId": pass_id})).json()
            assert again["balance"] == 2, "credits of the first run were lost"
            history = (await client.get(f"/history/pass/{pass_id}")).json()
            assert [g["generationId"] for g in history["generations"]] == [gen]
        pids = [p for p in json.loads((state / "infra.json").read_text())["pids"].values() if p]
        down = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "libs.devstack", "down"], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=120,
        )
        assert down.returncode == 0, down.stdout + down.stderr
        await wait_for(lambda: second.poll() is not None, timeout=60, what="make up to exit after make down")
        assert not any(_alive(p) for p in pids), "make down left processes running"
    finally:
        if second.poll() is None:
            second.kill()
