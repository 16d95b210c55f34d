"""Contract of every legacy and MMA route: statuses, keys and types the frontend reads (ROUTES.md)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import jwt
import orjson

from libs.settings import Settings
from tests.conftest import Services
from tests.gateway.support import ADMIN, data_url, png_bytes, read_sse, shopify_sign
from tests.helpers import wait_for


def token(settings: Settings, sub: str, email: str = "Ana@Example.com") -> str:
    secret = settings.supabase_jwt_secret.get_secret_value() if settings.supabase_jwt_secret else ""
    return jwt.encode({"sub": sub, "email": email, "aud": "authenticated", "exp": int(time.time()) + 600},
                      secret, algorithm="HS256")


def assert_legacy_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert body["ok"] is False and body["error"] == code and isinstance(body["message"], str), body
    assert isinstance(body["requestId"], str) and body["requestId"]
    return body


async def test_core_legacy_routes(stack: Services, client: httpx.AsyncClient) -> None:
    """health, stats, auth, me, credits, sessions, history, delete, feedback, log-error, CORS, request ids."""
    settings = stack.settings
    r = await client.get("/health")
    h = r.json()
    assert r.status_code == 200 and h["ok"] is True and h["supabase"] is True
    assert isinstance(h["service"], str) and isinstance(h["time"], str) and isinstance(h["env"], str)
    assert r.headers["x-request-id"]

    stats = (await client.get("/public/stats/total-users")).json()
    assert stats["ok"] is True and isinstance(stats["totalUsers"], int) and stats["source"]

    # CORS: preflight 204, exposed header, no credentials
    pre = await client.options("/mma/still/create", headers={
        "Origin": "https://mina.faltastudio.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-mina-pass-id"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "https://mina.faltastudio.com"
    assert "X-Mina-Pass-Id" in pre.headers["access-control-allow-headers"]
    assert "access-control-allow-credentials" not in pre.headers
    cors = await client.get("/health", headers={"Origin": "https://mina.faltastudio.com"})
    assert "X-Mina-Pass-Id" in cors.headers["access-control-expose-headers"]

    # auth
    no = (await client.post("/auth/shopify-sync")).json()
    assert no == {"ok": True, "loggedIn": False, "requestId": no["requestId"]}
    bad = (await client.post("/auth/shopify-sync", headers={"Authorization": "Bearer not.a.jwt"})).json()
    assert bad["loggedIn"] is False
    uid = str(uuid.uuid4())
    sync = await client.post("/auth/shopify-sync", headers={"Authorization": f"Bearer {token(settings, uid)}"})
    s = sync.json()
    assert s["ok"] is True and s["loggedIn"] is True and s["passId"] == f"pass:user:{uid}" == s["pass_id"]
    assert s["isNewUser"] is True and s["email"] == "ana@example.com"
    assert sync.headers["x-mina-pass-id"] == f"pass:user:{uid}"
    again = (await client.post("/auth/shopify-sync", headers={"Authorization": f"Bearer {token(settings, uid)}"}))
    assert again.json()["isNewUser"] is False

    me = (await client.get("/me", headers={"X-Mina-Pass-Id": "pass:anon:me-1"})).json()
    assert me["ok"] is True and me["user"] is None and me["isAdmin"] is False and me["passId"] == "pass:anon:me-1"
    me_user = (await client.get("/me", headers={"Authorization": f"Bearer {token(settings, uid)}"})).json()
    assert me_user["user"] == {"id": uid, "email": "ana@example.com"} and me_user["passId"] == f"pass:user:{uid}"
    assert_legacy_error(await client.get("/me", headers={"Authorization": "Bearer bad"}), 401, "INVALID_TOKEN")

    # credits: never a top-level `credits`; an unknown pass id reads 200 (welcome credits here)
    minted = await client.get("/credits/balance")
    assert minted.status_code == 200 and minted.headers["x-mina-pass-id"].startswith("pass:anon:")
    pass_id = "pass:anon:contract-1"
    h = {"X-Mina-Pass-Id": pass_id}
    bal = await client.get("/credits/balance", params={"passId": pass_id})
    b = bal.json()
    assert bal.headers["x-mina-pass-id"] == pass_id and "credits" not in b
    assert b["ok"] is True and b["balance"] == 20 and b["passId"] == pass_id and b["expiresAt"] is None
    assert b["meta"] == {"imageCost": 1, "motionCost": 5} and b["customerId"] == pass_id and b["source"]
    assert isinstance(b["historyLength"], int) and isinstance(b["requestId"], str)
    # a legacy Shopify id is `pass:shopify:<id>`: read only with its linked user's token or the admin token
    assert_legacy_error(await client.get("/credits/balance", params={"customerId": "12345"}), 401,
                        "NOT_AUTHENTICATED")
    legacy_id = await client.get("/credits/balance", params={"customerId": "12345"}, headers=ADMIN)
    assert legacy_id.json()["passId"] == "pass:shopify:12345"

    # sessions
    sess = (await client.post("/sessions/start", json={"passId": pass_id}, headers=h)).json()
    assert sess["ok"] is True and sess["passId"] == pass_id and isinstance(sess["sessionId"], str)
    assert sess["session"]["id"] == sess["sessionId"] and sess["session"]["platform"] == "web"
    assert sess["session"]["title"] == "Mina session" and sess["session"]["createdAt"]
    assert sess["session"]["customerId"] == pass_id

    # a generation through the legacy route so history has something
    ed = await client.post("/editorial/generate", headers=h, json={
        "passId": pass_id, "sessionId": sess["sessionId"], "brief": "a blue vase", "aspectRatio": "3:4"})
    e = ed.json()
    assert ed.status_code == 200, ed.text
    assert e["ok"] is True and e["imageUrl"] and e["imageUrls"] == [e["imageUrl"]] and e["generationId"]
    assert isinstance(e["prompt"], str) and e["sessionId"] == sess["sessionId"] and e["passId"] == pass_id
    assert e["credits"] == {"balance": 19, "cost": 1} and isinstance(e["message"], str)
    assert isinstance(e["gpt"]["imageTexts"], list) and "userMessage" in e["gpt"] and "usedFallback" in e["gpt"]

    fb = await client.post("/feedback/like", headers=h, json={
        "passId": pass_id, "generationId": e["generationId"], "resultType": "image", "platform": "web",
        "prompt": e["prompt"], "imageUrl": e["imageUrl"], "sessionId": sess["sessionId"]})
    f = fb.json()
    assert fb.status_code == 200 and f["ok"] is True and f["passId"] == pass_id and isinstance(f["feedbackId"], str)
    assert f["payload"]["generationId"] == e["generationId"] and isinstance(f["totals"]["likesForCustomer"], int)
    empty_fb = await client.post("/feedback/like", headers=h, json={})
    assert empty_fb.status_code == 200

    async def history_ready() -> dict[str, Any] | None:
        hist = (await client.get(f"/history/pass/{pass_id}", headers=h)).json()
        return hist if hist["generations"] and hist["feedbacks"] and hist["sessions"] else None

    hist = await wait_for(history_ready, 15, what="history")
    assert hist["ok"] is True and hist["passId"] == pass_id and hist["passIdsChecked"] == [pass_id]
    assert hist["credits"]["balance"] == 19 and "expiresAt" in hist["credits"]
    page = hist["page"]
    assert page["limit"] == 200 and page["returned"] == 1 and page["hasMore"] is False and "nextCursor" in page
    g = hist["generations"][0]
    for key in ("id", "generationId", "type", "mode", "sessionId", "passId", "platform", "prompt", "outputUrl",
                "createdAt", "meta", "mg_mma_vars"):
        assert key in g, key
    assert g["generationId"] == e["generationId"] and g["outputUrl"] == e["imageUrl"]
    fbrow = hist["feedbacks"][0]
    for key in ("id", "passId", "resultType", "platform", "prompt", "comment", "createdAt"):
        assert key in fbrow, key
    old = (await client.get("/history", params={"customerId": pass_id})).json()
    assert old["customerId"] == pass_id and len(old["generations"]) == 1
    forbidden = await client.get(f"/history/pass/{pass_id}", headers={"X-Mina-Pass-Id": "pass:anon:other"})
    assert_legacy_error(forbidden, 403, "FORBIDDEN")
    other_user = await client.get(f"/history/pass/{pass_id}",
                                  headers={"Authorization": f"Bearer {token(settings, uid)}"})
    assert other_user.status_code == 403

    # delete: someone else's row is not deleted; our own is
    theirs = (await client.delete(f"/history/{e['generationId']}", headers={"X-Mina-Pass-Id": "pass:anon:x"}))
    assert theirs.json() == {"ok": True, "requestId": theirs.json()["requestId"], "deleted": False,
                             "deletedCount": 0}
    mine = (await client.delete(f"/history/{e['generationId']}", headers=h)).json()
    assert mine["ok"] is True and mine["deleted"] is True and mine["deletedCount"] >= 1

    log_error = await client.post("/api/log-error", json={"code": "X", "message": "boom", "stack": "s", "url": "/"})
    assert log_error.status_code == 200 and log_error.json()["ok"] is True
    junk = await client.post("/api/log-error", content=b"not json", headers={"content-type": "application/json"})
    assert junk.status_code == 200 and junk.json()["ok"] is True


async def test_legacy_generation_checks_and_motion(stack: Services, client: httpx.AsyncClient) -> None:
    """The E2 generation routes: 400s in their documented order, then suggest and generate."""
    pass_id = "pass:anon:legacy-gen"
    h = {"X-Mina-Pass-Id": pass_id}
    assert_legacy_error(await client.post("/editorial/generate", headers=h, json={"passId": pass_id}), 400,
                        "MISSING_INPUT")
    assert_legacy_error(await client.post("/motion/generate", headers=h, json={"motionDescription": "x"}), 400,
                        "MISSING_LAST_IMAGE")
    assert_legacy_error(await client.post("/motion/generate", headers=h, json={"lastImageUrl": "https://a/b.png"}),
                        400, "MISSING_MOTION_DESCRIPTION")
    assert_legacy_error(await client.post("/motion/suggest", headers=h, json={}), 400, "MISSING_REFERENCE_IMAGE")
    wrong_type = await client.post("/editorial/generate", headers=h, json={"brief": {"not": "a string"}})
    assert_legacy_error(wrong_type, 400, "INVALID_INPUT")

    up = await client.post("/api/r2/upload-dataurl", headers=h, json={"dataUrl": data_url(png_bytes()),
                                                                      "kind": "still"})
    still_url = up.json()["publicUrl"]
    sug = await client.post("/motion/suggest", headers=h, json={"passId": pass_id, "inputStillUrl": still_url,
                                                                "userMotionBrief": "gentle"})
    s = sug.json()
    assert sug.status_code == 200, sug.text
    assert s["ok"] is True and isinstance(s["suggestion"], str) and s["suggestion"] and s["passId"] == pass_id
    assert s["motionPrompt"] == s["suggestion"] and s["gpt"] == {"usedFallback": False, "error": None}
    bal = (await client.get("/credits/balance", headers=h)).json()["balance"]
    assert bal == 20  # a suggestion is free

    mg = await client.post("/motion/generate", headers=h, json={
        "passId": pass_id, "lastImageUrl": still_url, "text": "slow orbit", "durationSeconds": 30})
    m = mg.json()
    assert mg.status_code == 200, mg.text
    assert m["ok"] is True and m["videoUrl"] and m["generationId"] and m["credits"] == {"balance": 15, "cost": 5}
    assert isinstance(m["prompt"], str) and isinstance(m["gpt"], dict)


async def test_mma_routes_contract(stack: Services, client: httpx.AsyncClient) -> None:
    """MMA create/animate/suggest/events/generation shapes and their error bodies."""
    pass_id = "pass:anon:mma-contract"
    h = {"X-Mina-Pass-Id": pass_id}
    r = await client.post("/mma/still/create", json={"customer_id": pass_id, "inputs": {"userBrief": "x"},
                                                      "assets": {"product_image_id": None}})
    assert r.status_code == 200 and r.headers["x-mina-pass-id"] == pass_id
    gid = r.json()["generation_id"]
    await read_sse(client, f"/mma/stream/{gid}")
    g = (await client.get(f"/mma/generations/{gid}", headers=h)).json()
    for key in ("generation_id", "status", "state", "mma_vars", "still_engine", "outputs", "prompt", "error"):
        assert key in g, key
    assert set(g["outputs"]) >= {"seedream_image_url", "nanobanana_image_url", "nanobanana2_image_url",
                                 "kling_video_url"}
    assert g["state"] == "done" and isinstance(g["status"], str) and g["error"] is None
    missing = await client.get("/mma/generations/ffffffffffffffffffffffffffffffff")
    assert missing.status_code == 404 and missing.json()["error"] == "NOT_FOUND"
    refresh = await client.post(f"/mma/generations/{gid}/refresh", headers=h)
    assert refresh.status_code == 200 and refresh.json()["alreadyDone"] is True
    assert refresh.json()["url"] == g["outputs"]["seedream_image_url"]
    assert (await client.post(f"/mma/generations/{gid}/refresh")).json()["error"] == "FORBIDDEN"  # another pass id

    sug = await client.post("/mma/video/animate", headers=h, json={
        "assets": {"input_still_generation_id": gid}, "mode": {"type_for_me": True}, "inputs": {"suggest_only": True}})
    assert sug.status_code == 200, sug.text
    sid = sug.json()["generation_id"]
    events = await read_sse(client, f"/mma/stream/{sid}")
    assert events.events[-1].event == "done" and events.events[-1].data["status"] == "suggested"
    sg = (await client.get(f"/mma/generations/{sid}")).json()
    assert sg["state"] == "suggested" and sg["mma_vars"]["prompts"]["suggested_prompt"]

    no_image = await client.post("/mma/video/animate", headers=h, json={"inputs": {"motion_user_brief": "x"}})
    assert no_image.status_code == 400 and no_image.json()["error"] == "MISSING_START_IMAGE"
    bad = await client.post("/mma/still/create", headers=h, json={"inputs": {"brief": ["not", "text"]}})
    assert bad.status_code == 400
    bb = bad.json()
    assert isinstance(bb["error"], str) and isinstance(bb["message"], str) and bb["status"] == "error"
    assert bb["error_detail"]["code"] == bb["error"]
    late = await client.post("/mma/still/create", headers=h, json={"inputs": {"brief": "x"},
                                                                   "deadline": "2020-01-01T00:00:00Z"})
    assert late.status_code == 409 and late.json()["error"] == "DEADLINE_EXCEEDED"

    ev = await client.post("/mma/events", headers=h, json={
        "passId": pass_id, "event_type": "preference_set", "payload": {"hard_block": "motion.light_flicker"}})
    e = ev.json()
    assert ev.status_code == 200 and e["status"] == "ok" and e["ok"] is True and e["event_id"] == e["eventId"]
    assert e["passId"] == pass_id and isinstance(e["preferences"], dict) and isinstance(e["requestId"], str)
    untyped = await client.post("/mma/events", headers=h, json={"payload": {}})
    assert untyped.status_code == 200 and untyped.json()["status"] == "ok"


async def test_billing_admin_and_webhook_routes(stack: Services, client: httpx.AsyncClient) -> None:
    """Shopify webhook, admin credit routes, billing settings and the N-only routes: never a 500."""
    secret = "test-shopify-secret-71aa"
    pass_id = "pass:anon:buyer-1"
    order = orjson.dumps({"id": 9001, "note_attributes": [{"name": "mina_pass_id", "value": pass_id}],
                          "line_items": [{"sku": "MINA-50", "quantity": 1}]})
    bad = await client.post("/api/credits/shopify-order", content=order,
                            headers={"X-Shopify-Hmac-Sha256": "nope", "content-type": "application/json"})
    assert_legacy_error(bad, 401, "INVALID_HMAC")
    no_id = orjson.dumps({"line_items": []})
    missing = await client.post("/api/credits/shopify-order", content=no_id,
                                headers={"X-Shopify-Hmac-Sha256": shopify_sign(no_id, secret)})
    assert_legacy_error(missing, 400, "MISSING_ORDER_ID")
    ok = await client.post("/api/credits/shopify-order", content=order,
                           headers={"X-Shopify-Hmac-Sha256": shopify_sign(order, secret)})
    o = ok.json()
    assert ok.status_code == 200 and o["ok"] is True and o["orderId"] == "9001" and o["credited"] == 50
    assert o["passId"] == pass_id == o["customerId"] and o["balance"] == 70 and "expiresAt" in o
    dup = (await client.post("/api/credits/shopify-order", content=order,
                             headers={"X-Shopify-Hmac-Sha256": shopify_sign(order, secret)})).json()
    assert dup["ok"] is True and dup["alreadyProcessed"] is True and dup["orderId"] == "9001"
    nosku = orjson.dumps({"id": 9002, "line_items": [{"sku": "OTHER"}]})
    n = (await client.post("/api/credits/shopify-order", content=nosku,
                           headers={"X-Shopify-Hmac-Sha256": shopify_sign(nosku, secret)})).json()
    assert n["credited"] == 0 and n["reason"] == "NO_MATCHING_PRODUCT"

    assert (await client.post("/admin/credits/adjust", json={"passId": pass_id, "delta": 5})).status_code == 401
    adj = await client.post("/admin/credits/adjust", headers={**ADMIN, "Idempotency-Key": "contract-adj-1"},
                            json={"passId": pass_id, "delta": 5})
    a = adj.json()
    assert adj.status_code == 200 and a["ok"] is True and a["creditsBefore"] == 70 and a["creditsAfter"] == 75
    assert a["passId"] == pass_id and "expiresAt" in a
    assert (await client.post("/admin/credits/adjust", headers=ADMIN, json={"delta": 5})).status_code == 400
    assert_legacy_error(await client.post("/admin/credits/adjust", headers=ADMIN,
                                          json={"passId": pass_id, "delta": 1.5}), 400, "INVALID_AMOUNT")
    assert_legacy_error(await client.post("/admin/credits/adjust", headers=ADMIN,
                                          json={"passId": pass_id, "delta": 1}), 400, "MISSING_IDEMPOTENCY_KEY")

    assert (await client.post("/credits/add", json={"customerId": pass_id, "amount": 1})).status_code == 401
    add = (await client.post("/credits/add", headers=ADMIN, json={"customerId": pass_id, "amount": 2})).json()
    assert add["ok"] is True and add["newBalance"] == 77 and add["customerId"] == pass_id and add["passId"]
    assert_legacy_error(await client.post("/credits/add", headers=ADMIN, json={"customerId": pass_id,
                                                                                "amount": "x"}), 400,
                        "INVALID_AMOUNT")

    assert (await client.get("/billing/settings", params={"customerId": pass_id})).status_code == 401
    got = await client.get("/billing/settings", headers=ADMIN, params={"customerId": pass_id})
    assert got.status_code == 200 and set(got.json()) >= {"customerId", "enabled", "monthlyLimitPacks", "passId",
                                                           "source"}
    miss = await client.get("/billing/settings", headers=ADMIN)
    assert miss.status_code == 400 and miss.json()["error"] == "Missing customerId"
    post_miss = await client.post("/billing/settings", headers=ADMIN, json={})
    assert post_miss.status_code == 400 and post_miss.json()["error"] == "customerId is required"

    claim = await client.post("/api/welcome-matcha/claim", headers={"X-Mina-Pass-Id": "pass:anon:matcha"})
    assert_legacy_error(claim, 401, "NOT_AUTHENTICATED")  # a signed-in customer's claim: tests/gateway/test_surface.py
    for path in ("/api/checkout/create", "/fingertips/generate"):
        r = await client.post(path, json={"qty": 1})
        assert r.status_code < 500 or r.status_code == 503, path
        assert r.json()["ok"] is False and isinstance(r.json()["message"], str)


async def test_uploads(stack: Services, client: httpx.AsyncClient) -> None:
    """dataUrl upload, presign + PUT, remote copy, multipart with type sniffing, /assets and size limits."""
    settings = stack.settings
    h = {"X-Mina-Pass-Id": "pass:anon:uploader"}
    img = png_bytes()
    up = (await client.post("/api/r2/upload-signed", headers=h, json={"dataUrl": data_url(img), "kind": "product"}))
    u = up.json()
    assert up.status_code == 200 and u["ok"] is True and u["url"] == u["publicUrl"] and u["bytes"] == len(img)
    assert u["contentType"] == "image/png" and isinstance(u["key"], str)
    served = await client.get(u["publicUrl"].replace(stack.gateway_url, ""))
    assert served.status_code == 200 and served.content == img and served.headers["content-type"] == "image/png"

    pre = (await client.post("/api/r2/upload-signed", headers=h, json={"contentType": "image/png",
                                                                      "fileName": "a.png"})).json()
    assert pre["ok"] is True and pre["expiresIn"] == 600 and pre["uploadUrl"] and pre["publicUrl"] == pre["url"]
    put = await client.put(pre["uploadUrl"], content=img, headers={"content-type": "image/png"})
    assert put.status_code == 200, put.text
    assert (await client.get(pre["publicUrl"])).content == img
    tampered = pre["uploadUrl"].replace("sig=", "sig=0")
    assert (await client.put(tampered, content=img)).status_code == 403
    expired = pre["uploadUrl"].split("?")[0] + "?expires=1&content_type=image%2Fpng&sig=abc"
    assert (await client.put(expired, content=img)).status_code == 403

    remote = (await client.post("/api/r2/store-remote-signed", headers=h, json={"url": u["publicUrl"]})).json()
    assert remote["ok"] is True and remote["publicUrl"] == remote["url"] and remote["key"]
    assert_legacy_error(await client.post("/api/r2/store-remote-signed", headers=h, json={}), 400, "MISSING_URL")
    assert_legacy_error(await client.post("/api/r2/upload-dataurl", headers=h, json={}), 400, "MISSING_DATAURL")
    assert_legacy_error(await client.post("/store-remote-generation", headers=h, json={}), 400, "NO_URL")
    gen = (await client.post("/store-remote-generation", headers=h, json={"url": u["publicUrl"]})).json()
    assert gen["ok"] is True and gen["publicUrl"]

    multi = await client.post("/api/upload", headers=h, files={"file": ("x.bin", img, "application/octet-stream")})
    mu = multi.json()
    assert multi.status_code == 200 and mu["contentType"] == "image/png" and mu["width"] == 64
    html = await client.post("/api/upload", headers=h, files={"file": ("x.png", b"<html>hi</html>", "image/png")})
    assert_legacy_error(html, 400, "UNSUPPORTED_TYPE")
    truncated = await client.post("/api/upload", headers=h, files={"file": ("x.png", img[:60], "image/png")})
    assert_legacy_error(truncated, 400, "INVALID_IMAGE")
    huge = b"\x89PNG\r\n\x1a\n" + b"0" * (settings.upload_max_bytes + 10)
    too_big = await client.post("/api/upload", headers=h, files={"file": ("x.png", huge, "image/png")})
    assert_legacy_error(too_big, 413, "FILE_TOO_LARGE")
    body_limit = await client.post("/api/r2/upload-dataurl", headers={**h, "content-type": "application/json"},
                                   content=b"x" * (settings.max_body_bytes + 1))
    assert_legacy_error(body_limit, 413, "PAYLOAD_TOO_LARGE")

    dl = await client.get("/public/download", params={"url": u["publicUrl"]})
    assert dl.status_code == 200 and dl.content == img and "attachment" in dl.headers["content-disposition"]
    inside = await client.get("/public/download", params={"url": "http://169.254.169.254/latest/meta-data/"})
    assert inside.status_code == 400 and inside.json()["code"] == "URL_NOT_ALLOWED"
    assert (await client.get("/assets/../../etc/passwd")).status_code in (404, 400)


async def test_openapi_and_ops(stack: Services, client: httpx.AsyncClient) -> None:
    """Every route is described by the OpenAPI document; healthz, readyz and metrics answer."""
    doc = (await client.get("/openapi.json")).json()
    paths = set(doc["paths"])
    for path in ("/mma/still/create", "/mma/still/{generation_id}/tweak", "/mma/video/animate",
                 "/mma/video/{generation_id}/tweak", "/mma/generations/{generation_id}", "/mma/stream/{generation_id}",
                 "/mma/events", "/mma/admin/errors", "/mma/admin/steps/{generation_id}", "/health",
                 "/public/stats/total-users", "/auth/shopify-sync", "/me", "/credits/balance", "/sessions/start",
                 "/history/pass/{pass_id}", "/history", "/history/{item_id}", "/feedback/like", "/api/log-error",
                 "/editorial/generate", "/motion/suggest", "/motion/generate", "/api/r2/upload-signed",
                 "/api/r2/store-remote-signed", "/api/r2/upload-dataurl", "/store-remote-generation",
                 "/api/credits/shopify-order", "/billing/settings", "/credits/add", "/admin/summary",
                 "/admin/customers", "/admin/mega/parity", "/admin/credits/adjust", "/api/upload"):
        assert path in paths, path
    assert (await client.get("/healthz")).json() == {"ok": True}
    assert (await client.get("/readyz")).status_code == 200
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200 and "mina_http_requests_total" in metrics.text
    unknown = await client.get("/no/such/route")
    assert_legacy_error(unknown, 404, "NOT_FOUND")
