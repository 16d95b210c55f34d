"""`make up` / `make down` as a new user runs them: the real devstack with embedded infrastructure."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx

from libs.devinfra import free_port
from libs.settings import Settings
from tests.gateway.support import user_token
from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]
JWT_SECRET = "devstack-test-jwt-secret-0123456789abcdef"


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def _buy_in_the_offline_shop(client: httpx.AsyncClient, base: str) -> None:
    """A signed-in customer buys one MINA-50 pack: checkout, the invoice page, Pay → back at the studio
    with `?checkout=complete`, 50 credits more; paying the invoice again credits nothing."""
    uid = str(uuid.uuid4())
    token = user_token(Settings(_env_file=None, supabase_jwt_secret=JWT_SECRET), uid, "buyer@example.com")
    headers = {"Authorization": f"Bearer {token}", "X-Mina-Pass-Id": f"pass:user:{uid}"}

    async def balance() -> int:
        answer = await client.get("/credits/balance", headers=headers)
        assert answer.status_code == 200, answer.text
        return int(answer.json()["balance"])

    before = await balance()
    created = await client.post("/api/checkout/create", headers=headers, json={"qty": 1})
    assert created.status_code == 200, created.text
    out = created.json()
    assert out["ok"] is True and isinstance(out["draftOrderId"], int), out
    async with httpx.AsyncClient(timeout=30) as browser:
        invoice = await browser.get(out["checkoutUrl"])
        assert invoice.status_code == 200 and "Pay (offline shop)" in invoice.text, invoice.text
        assert "MINA-50" in invoice.text and "GBP 15.00" in invoice.text
        form = re.search(r"<form method='post' action='([^']+)'>", invoice.text)
        assert form is not None, invoice.text
        pay_url = str(invoice.url.join(form.group(1)))
        paid = await browser.post(pay_url, follow_redirects=True)
        assert paid.status_code == 200, paid.text
        assert str(paid.url) == f"{base}/studio?checkout=complete"
        assert await balance() == before + 50
        again = await browser.post(pay_url, follow_redirects=True)
        assert again.status_code == 200 and str(again.url) == f"{base}/studio?checkout=complete"
        assert await balance() == before + 50, "paying the invoice again credited it twice"


def _devstack(command: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "libs.devstack", command], cwd=ROOT, env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


async def test_up_serves_then_ctrl_c_stops_and_a_second_up_keeps_the_data(tmp_path: Path) -> None:
    state = tmp_path / "state"
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MMA_")}
    env.update({"MMA_STATE_DIR": str(state), "MMA_GATEWAY_PORT": str(port), "MMA_WELCOME_CREDITS": "3",
                "MMA_SUPABASE_JWT_SECRET": JWT_SECRET, "PYTHONPATH": str(ROOT)})
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
            await _buy_in_the_offline_shop(client, base)
        infra: dict[str, Any] = json.loads((state / "infra.json").read_text())
        pids = [p for p in infra["pids"].values() if p]
        assert len(pids) == 7  # nats, postgres, the offline shop and the four services
        status = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "libs.devstack", "status"], cwd=ROOT, env=env,
            capture_output=True, text=True, timeout=60,
        )
        assert status.returncode == 0 and re.search(r"shop: running \(pid \d+\)", status.stdout), status.stdout
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
