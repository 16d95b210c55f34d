"""The rest of the frontend's surface (UPSTREAM.md 2.2-2.4, 4): the welcome claim, refresh, the
download proxy behind the fetch guard, and the older clients' routes, on the real stack."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from libs.settings import Settings
from tests.conftest import Services
from tests.gateway.support import ADMIN, data_url, png_bytes, read_sse, user_token
from tests.wire import ImageServer


@pytest.fixture
def web() -> Iterator[ImageServer]:
    with ImageServer() as server:
        assert isinstance(server, ImageServer)
        yield server


def signed_in(settings: Settings, email: str | None = None) -> tuple[str, dict[str, str]]:
    uid = str(uuid.uuid4())
    return f"pass:user:{uid}", {"Authorization": f"Bearer {user_token(settings, uid, email)}"}


async def still(client: httpx.AsyncClient, headers: dict[str, str], wait: bool = True) -> str:
    r = await client.post("/mma/still/create", headers=headers,
                          json={"inputs": {"brief": "a bottle on sand", "aspect_ratio": "1:1"}})
    assert r.status_code == 200, r.text
    out = r.json()
    if wait:
        assert (await read_sse(client, out["sse_url"], timeout=90)).closed
    return str(out["generation_id"])


async def test_the_welcome_claim_needs_a_token_and_credits_once(services: Services, settings: Settings) -> None:
    """No token → 401 NOT_AUTHENTICATED; a user's first claim +5 (30-day expiry) on pass:user:<uid> whatever
    pass id is sent; again → alreadyClaimed; a user already welcomed automatically has nothing to claim."""
    await services.start_all(welcome_credits=0, credit_expiry_days=30)
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30.0) as client:
        anon = await client.post("/api/welcome-matcha/claim", headers={"X-Mina-Pass-Id": "pass:anon:matcha-1"})
        assert anon.status_code == 401
        assert (anon.json()["ok"], anon.json()["error"]) == (False, "NOT_AUTHENTICATED") and anon.json()["requestId"]
        bad = await client.post("/api/welcome-matcha/claim", headers={"Authorization": "Bearer not.a.jwt"})
        assert bad.status_code == 401 and bad.json()["error"] == "NOT_AUTHENTICATED"

        pass_id, auth = signed_in(settings, "new@example.com")
        first = await client.post("/api/welcome-matcha/claim", json={"passId": "pass:anon:someone-else"},
                                  headers={**auth, "X-Mina-Pass-Id": "pass:anon:someone-else"})
        assert first.status_code == 200, first.text
        f = first.json()
        assert (f["ok"], f["passId"], f["credited"], f["balance"]) == (True, pass_id, 5, 5)
        assert first.headers["x-mina-pass-id"] == pass_id and "alreadyClaimed" not in f
        expires = datetime.fromisoformat(f["expiresAt"])
        assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)
        again = (await client.post("/api/welcome-matcha/claim", headers=auth)).json()
        assert (again["alreadyClaimed"], again["balance"], again["passId"]) == (True, 5, pass_id)
        assert "credited" not in again
        assert (await client.get("/credits/balance", headers={**auth, "X-Mina-Pass-Id": pass_id})).json()[
            "balance"] == 5


async def test_refresh_answers_the_ledger_as_it_is(services: Services, settings: Settings) -> None:
    """Unknown → 404 NOT_FOUND; another customer's → 403 FORBIDDEN; running → its status; done → alreadyDone + url."""
    await services.start_all(welcome_credits=20, offline_latency_ms=1500)
    owner = {"X-Mina-Pass-Id": f"pass:anon:{uuid.uuid4()}"}
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=60.0) as client:
        missing = await client.post(f"/mma/generations/{uuid.uuid4().hex}/refresh", headers=owner)
        assert missing.status_code == 404 and missing.json()["ok"] is False and missing.json()["error"] == "NOT_FOUND"

        gid = await still(client, owner, wait=False)
        running = (await client.post(f"/mma/generations/{gid}/refresh", headers=owner)).json()
        assert (running["ok"], running["refreshed"], running["alreadyDone"]) == (True, False, False)
        assert running["status"] in ("queued", "scanning", "prompting", "generating", "postscan")
        assert running["provider_status"] == running["status"]

        stranger = await client.post(f"/mma/generations/{gid}/refresh",
                                     headers={"X-Mina-Pass-Id": f"pass:anon:{uuid.uuid4()}"})
        assert stranger.status_code == 403 and stranger.json()["ok"] is False
        assert stranger.json()["error"] == "FORBIDDEN"

        assert (await read_sse(client, f"/mma/stream/{gid}", timeout=90)).closed
        done = (await client.post(f"/mma/generations/{gid}/refresh", headers=owner)).json()
        assert (done["ok"], done["refreshed"], done["alreadyDone"]) == (True, False, True)
        generation = (await client.get(f"/mma/generations/{gid}", headers=owner)).json()
        assert done["url"] == generation["outputs"]["seedream_image_url"] and done["url"]

        user_pass, auth = signed_in(settings)
        mine = await still(client, {**auth, "X-Mina-Pass-Id": user_pass}, wait=False)
        other_user = signed_in(settings)[1]
        refused = await client.post(f"/mma/generations/{mine}/refresh", headers=other_user)
        assert refused.status_code == 403 and refused.json()["error"] == "FORBIDDEN"


async def test_download_serves_ours_fetches_public_and_refuses_inside(services: Services, web: ImageServer) -> None:
    """Our asset directly; a (test-allowed) host fetched with its type; its 404 mirrored; a dead host 502;
    loopback, private and metadata hosts 400 URL_NOT_ALLOWED before any connection; CORS `*` throughout."""
    await services.start_all(welcome_credits=0, fetch_allow_hosts=json.dumps([web.host_port]))
    other = ImageServer().start()  # a loopback server the guard must refuse
    other_url = f"{other.url}/img/secret.png"
    other.stop()
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30.0) as client:
        img = png_bytes()
        up = (await client.post("/api/r2/upload-dataurl", headers={"X-Mina-Pass-Id": "pass:anon:dl-1"},
                                json={"dataUrl": data_url(img)})).json()
        ours = await client.get("/public/download", params={"url": up["publicUrl"]})
        assert ours.status_code == 200 and ours.content == img and ours.headers["content-type"] == "image/png"
        assert ours.headers["access-control-allow-origin"] == "*"

        remote = await client.get("/public/download", params={"url": f"{web.url}/img/a.png"})
        assert remote.status_code == 200 and remote.content.startswith(b"\x89PNG")
        assert remote.headers["content-type"] == "image/png" and remote.headers["access-control-allow-origin"] == "*"
        assert int(remote.headers["content-length"]) == len(remote.content)

        web.fail("image", 404)
        gone = await client.get("/public/download", params={"url": f"{web.url}/img/gone.png"})
        assert gone.status_code == 404 and gone.json()["error"] == "Upstream 404"
        assert gone.headers["access-control-allow-origin"] == "*"

        missing = await client.get("/public/download")
        assert missing.status_code == 400 and missing.json()["error"] == "Missing url param"
        for url in (other_url, "http://169.254.169.254/latest/meta-data/", "http://10.1.2.3/x.png",
                    f"http://localhost:{services.settings.gateway_port}/health"):
            refused = await client.get("/public/download", params={"url": url})
            assert refused.status_code == 400, (url, refused.text)
            assert refused.json()["code"] == "URL_NOT_ALLOWED" and "not a public address" in refused.json()["error"]
        assert (await client.get("/public/download", params={"url": "file:///etc/passwd"})).status_code == 400

        web.stop()
        dead = await client.get("/public/download", params={"url": f"{web.url}/img/a.png"})
        assert dead.status_code == 502 and dead.json()["error"] == "Failed to fetch upstream"


async def test_older_clients_routes_and_history_mode(services: Services, settings: Settings) -> None:
    """/history/customer/:id, /api/runtime-config, /api/r2/upload, /api/r2/store-remote, /mma/motion/suggest
    answer with real behaviour and the identity rules; history items carry `mg_mma_mode`."""
    await services.start_all(welcome_credits=20)
    pass_id, auth = signed_in(settings)
    mine = {**auth, "X-Mina-Pass-Id": pass_id}
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=60.0) as client:
        gid = await still(client, mine)
        history = await client.get(f"/history/customer/{pass_id}", headers=mine)
        assert history.status_code == 200, history.text
        h = history.json()
        assert h["ok"] is True and h["passId"] == pass_id == h["customerId"]
        item = next(g for g in h["generations"] if g["id"] == gid)
        assert item["mg_mma_mode"] == "still" and item["mode"] == "still"
        pass_history = (await client.get(f"/history/pass/{pass_id}", headers=mine)).json()
        assert next(g for g in pass_history["generations"] if g["id"] == gid)["mg_mma_mode"] == "still"
        assert (await client.get(f"/history/customer/{pass_id}")).status_code == 401
        assert (await client.get(f"/history/customer/{pass_id}", headers=signed_in(settings)[1])).status_code == 403

        upload = await client.post("/api/r2/upload", headers=mine, json={"dataUrl": data_url(png_bytes()),
                                                                          "kind": "product"})
        u = upload.json()
        assert upload.status_code == 200 and u["ok"] is True and u["publicUrl"] == u["url"]
        assert (await client.get(u["publicUrl"])).content == png_bytes()
        copied = (await client.post("/api/r2/store-remote", headers=mine, json={"url": u["publicUrl"]})).json()
        assert copied["ok"] is True and copied["publicUrl"] == copied["url"]
        assert (await client.post("/api/r2/store-remote", headers=mine, json={})).json()["error"] == "MISSING_URL"

        suggest = await client.post("/mma/motion/suggest", headers=mine,
                                    json={"referenceImageUrl": u["publicUrl"], "text": "slow push in"})
        assert suggest.status_code == 200, suggest.text
        assert isinstance(suggest.json()["suggestion"], str) and suggest.json()["suggestion"]
        assert suggest.json()["motionPrompt"] == suggest.json()["suggestion"]

        assert (await client.get("/api/runtime-config")).status_code == 401
        assert (await client.get("/api/runtime-config", headers=mine)).status_code == 403
        config = (await client.get("/api/runtime-config", headers=ADMIN)).json()
        assert config["ok"] is True and isinstance(config["config"], dict) and isinstance(config["versions"], dict)
        key = next(iter(sorted(config["config"])))
        changed: dict[str, Any] = {**config["config"][key], "note": "set through the old editor"}
        put = await client.put("/api/runtime-config", headers=ADMIN, json={**config, "config": {key: changed}})
        assert put.status_code == 200, put.text
        after = put.json()
        assert after["config"][key]["note"] == "set through the old editor"
        assert after["versions"][key] == config["versions"][key] + 1
        same = (await client.put("/api/runtime-config", headers=ADMIN, json={key: changed})).json()
        assert same["versions"][key] == after["versions"][key]  # nothing changed: no new version
        bad = await client.put("/api/runtime-config", headers=ADMIN, json={"config": {"secrets": {"x": 1}}})
        assert bad.status_code == 400 and bad.json()["error"] == "INVALID_CONFIG_KEY"
        assert (await client.put("/api/runtime-config", headers=mine, json={key: changed})).status_code == 403
