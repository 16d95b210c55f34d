"""A create whose asset URL leads inside our network is refused with a 400 before any charge.

The gateway follows each customer URL (every redirect hop checked) before it publishes the
command; the pipeline checks again when it fetches, so a job that reaches it some other way
fails (and is refunded) instead of fetching. Our asset store's own URLs keep working, and a
host on the test allow-list (the image server here, standing in for a public CDN) is fetched.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from libs.bus import Bus
from libs.schemas import Assets, Flow, GenerationRequest, Inputs, new_id
from tests.conftest import Services
from tests.control.support import upload_product
from tests.helpers import wait_for
from tests.pipeline.conftest import collect, publish_job
from tests.wire import ImageServer


@pytest.fixture
def cdn() -> Iterator[ImageServer]:
    with ImageServer() as server:
        assert isinstance(server, ImageServer)
        yield server


@pytest.fixture
def inside() -> Iterator[ImageServer]:
    """Something inside our network (loopback, not on the allow-list)."""
    with ImageServer() as server:
        assert isinstance(server, ImageServer)
        yield server


async def balance(client: httpx.AsyncClient, pass_id: str) -> int:
    return int((await client.get("/credits/balance", params={"passId": pass_id})).json()["balance"])


async def debits(db: Any, pass_id: str) -> int:
    return int(await db.fetchval("select count(*) from mega_generations where mg_record_type = 'credit_transaction'"
                                 " and mg_pass_id = $1 and mg_delta < 0", pass_id))


async def test_a_create_with_a_private_asset_url_is_400_before_any_charge(
        services: Services, cdn: ImageServer, inside: ImageServer, db: Any) -> None:
    """Loopback, cloud metadata, and a redirect inside: 400 URL_NOT_ALLOWED, balance and ledger unchanged."""
    for name in ("ledger", "billing", "gateway"):
        await services.start(name, welcome_credits=5, fetch_allow_hosts=json.dumps([cdn.host_port]))
    pass_id = f"pass:anon:{new_id()}"
    refused = [
        ("/mma/still/create", {"assets": {"product_image_url": "http://127.0.0.1/x.png"}}),
        ("/mma/still/create", {"assets": {"logo_image_url": "http://169.254.169.254/latest/meta-data/"}}),
        ("/mma/still/create", {"assets": {"inspiration_image_urls": [f"{cdn.url}/img/ok.png",
                                                                     f"{inside.url}/img/x.png"]}}),
        ("/mma/still/create", {"assets": {"product_image_url": cdn.redirect_to(f"{inside.url}/img/x.png")}}),
        ("/mma/still/create", {"assets": {"product_image_url": cdn.redirect_to("http://169.254.169.254/")}}),
        ("/mma/video/animate", {"assets": {"start_image_url": f"http://localhost:{inside.url.rsplit(':', 1)[1]}/a"},
                                "inputs": {"motion_user_brief": "orbit"}}),
    ]
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30) as client:
        assert await balance(client, pass_id) == 5
        for path, body in refused:
            answer = await client.post(path, json={"passId": pass_id, "inputs": {"brief": "a bottle"}, **body})
            assert answer.status_code == 400, (body, answer.text)
            assert answer.json()["error"] == "URL_NOT_ALLOWED" and answer.json()["message"], answer.text
        legacy = await client.post("/editorial/generate", json={"passId": pass_id, "brief": "a bottle",
                                                                "productImageUrl": "http://10.1.2.3/p.png"})
        assert legacy.status_code == 400 and legacy.json()["ok"] is False, legacy.text
        assert legacy.json()["error"] == "URL_NOT_ALLOWED"
        assert await balance(client, pass_id) == 5
    assert await debits(db, pass_id) == 0
    assert inside.count("image") == 0  # nothing inside was ever fetched


async def test_our_store_and_allowed_hosts_still_work(services: Services, cdn: ImageServer) -> None:
    """An uploaded asset (our store's public base, on loopback in tests) and an allowed host's image: done."""
    await services.start_all(welcome_credits=5, fetch_allow_hosts=json.dumps([cdn.host_port]))
    pass_id = f"pass:anon:{new_id()}"
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30) as client:
        product = await upload_product(client, pass_id)
        assert product.startswith(services.settings.assets_base_url + "/")
        answer = await client.post("/mma/still/create", json={
            "passId": pass_id, "inputs": {"brief": "a bottle"},
            "assets": {"product_image_url": product, "logo_image_url": cdn.redirect_to(f"{cdn.url}/img/logo.png")}})
        assert answer.status_code == 200, answer.text
        generation_id = answer.json()["generation_id"]

        async def done() -> bool:
            state = (await client.get(f"/mma/generations/{generation_id}")).json()["state"]
            assert state != "error", state
            return bool(state == "done")

        await wait_for(done, 60, what="the generation to finish")
        assert await balance(client, pass_id) == 4
    assert cdn.count("image") >= 2  # the gateway's check, then the pipeline's scan


async def test_the_pipeline_guards_again_at_fetch(services: Services, bus: Bus, inside: ImageServer) -> None:
    """A job that skipped the gateway's check: the scan step fails URL_NOT_ALLOWED, nothing fetched."""
    await services.start("ledger")
    await services.start("pipeline")
    request = GenerationRequest(assets=Assets(product_image_url=f"{inside.url}/img/p.png"),
                                inputs=Inputs(user_brief="a bottle"))
    events = await collect(bus, await publish_job(bus, Flow.STILL_CREATE, request))
    failed = events.failed
    assert failed.step_type == "scan_product" and failed.detail["error_code"] == "URL_NOT_ALLOWED"
    assert failed.detail["category"] == "VALIDATION_ERROR"
    assert inside.count("image") == 0
