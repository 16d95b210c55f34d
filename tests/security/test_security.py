"""Security checks not already covered by the gateway suite.

Covered elsewhere, not repeated: admin routes refuse a missing/wrong token with 401
`{error:"Unauthorized"}` — tests/gateway/test_flows.py `test_failed_tweak_parent_and_admin_reads`
and test_contract.py `test_billing_admin_and_webhook_routes` (which also checks a bad Shopify HMAC
is 401 INVALID_HMAC and a replayed order is credited once, `alreadyProcessed`); a different pass id
(header or verified Bearer) than the history URL's is 403 and `DELETE /history/:id` soft-deletes only
the caller's rows — test_contract.py `test_core_legacy_routes`; body and upload size limits (413) —
test_contract.py `test_uploads`; the per-pass-id 429 with Retry-After — test_flows.py
`test_rate_limit_per_pass_id`.
"""

from __future__ import annotations

import time
import uuid

import asyncpg
import httpx
import jwt
import orjson

from tests.conftest import ADMIN_TOKEN, Services
from tests.gateway.support import ADMIN, read_sse, shopify_sign
from tests.gateway.test_contract import token

OPENAI_KEY = "sk-secret-openai-7f3a9c"
REPLICATE_TOKEN = "r8_secret_replicate_2b8d"


async def test_no_pass_id_reads_as_the_urls_and_a_matching_bearer_is_allowed(services: Services) -> None:
    """A history request with no identity reads as the URL's anon pass id (a bearer secret); a
    customer's (`pass:user:`) needs the verified Bearer of that user: forged or none is 401."""
    await services.start_all(welcome_credits=3)
    uid = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30) as client:
        anon = "pass:anon:sec-none"
        r = await client.get(f"/history/pass/{anon}")
        assert r.status_code == 200 and r.json()["passId"] == anon, r.text
        mine = f"pass:user:{uid}"
        r = await client.get(f"/history/pass/{mine}",
                             headers={"Authorization": f"Bearer {token(services.settings, uid)}"})
        assert r.status_code == 200 and r.json()["passId"] == mine, r.text
        forged = jwt.encode({"sub": uid, "aud": "authenticated", "exp": int(time.time()) + 600},
                            "a-wrong-secret-of-enough-length-0123456789", algorithm="HS256")
        r = await client.get(f"/history/pass/{mine}", headers={"Authorization": f"Bearer {forged}"})
        # an unverified token carries no identity, and a customer's history needs theirs (issue #15)
        assert r.status_code == 401 and r.json()["error"] == "NOT_AUTHENTICATED", r.text
        assert (await client.get(f"/history/pass/{mine}")).status_code == 401


async def test_secrets_never_reach_a_log_line_or_a_mega_row(services: Services, database_url: str) -> None:
    """With provider keys, the admin token and the webhook/JWT/upload secrets set, a full flow
    (create, tweak, admin reads, signed webhook) leaves none of their values in any log or row."""
    await services.start_all(welcome_credits=5, openai_api_key=OPENAI_KEY, replicate_api_token=REPLICATE_TOKEN,
                             provider="offline")
    s = services.settings
    secrets = [OPENAI_KEY, REPLICATE_TOKEN, ADMIN_TOKEN]
    secrets += [v.get_secret_value() for v in (s.shopify_webhook_secret, s.supabase_jwt_secret,
                                               s.upload_signing_secret) if v is not None]
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30) as client:
        h = {"X-Mina-Pass-Id": "pass:anon:sec-secrets"}
        r = await client.post("/mma/still/create", headers=h, json={"inputs": {"brief": "a quiet bottle"}})
        gid = r.json()["generation_id"]
        await read_sse(client, f"/mma/stream/{gid}", timeout=60)
        t = await client.post(f"/mma/still/{gid}/tweak", headers=h, json={"feedback": {"still_feedback": "x"}})
        await read_sse(client, f"/mma/stream/{t.json()['generation_id']}", timeout=60)
        for path in ("/admin/summary", "/admin/mega/parity", f"/mma/admin/steps/{gid}"):
            assert (await client.get(path, headers=ADMIN)).status_code == 200
        order = orjson.dumps({"id": 7001, "note_attributes": [{"name": "mina_pass_id", "value": h["X-Mina-Pass-Id"]}],
                              "line_items": [{"sku": "MINA-50", "quantity": 1}]})
        secret = s.shopify_webhook_secret.get_secret_value() if s.shopify_webhook_secret else ""
        assert (await client.post("/api/credits/shopify-order", content=order,
                                  headers={"X-Shopify-Hmac-Sha256": shopify_sign(order, secret)})).status_code == 200
        await client.get("/me", headers={"Authorization": f"Bearer {token(s, str(uuid.uuid4()))}"})
    logs = services.all_logs()
    assert logs and gid in logs
    for value in secrets:
        assert value not in logs, f"a secret ({value[:6]}...) is in a service log"
    conn = await asyncpg.connect(database_url)
    try:
        for table in ("mega_customers", "mega_generations", "mega_admin"):
            rows = await conn.fetch(f"select t::text as row from {table} t")  # every column, jsonb included
            assert rows or table != "mega_generations"
            for row in rows:
                for value in secrets:
                    assert value not in row["row"], f"a secret ({value[:6]}...) is in {table}"
    finally:
        await conn.close()


async def test_store_remote_refuses_hosts_inside_our_network(services: Services) -> None:
    """A customer's link must not make the gateway fetch from loopback, private or link-local
    addresses (cloud metadata, NATS monitoring): 400 URL_NOT_ALLOWED, nothing stored. The
    local-testing switch MMA_REMOTE_FETCH_ALLOW_PRIVATE lets the same loopback fetch through."""
    procs = await services.start_all()
    inside = [f"{services.gateway_url}/healthz", "http://localhost:9/x.png", "http://169.254.169.254/latest/meta-data/",
              "http://10.0.0.7/x.png", "http://[::1]:9/x.png", "http://0.0.0.0:9/x.png"]
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30) as client:
        for url in inside:
            for route in ("/api/r2/store-remote-signed", "/store-remote-generation"):
                r = await client.post(route, json={"url": url, "passId": "pass:anon:ssrf"})
                assert r.status_code == 400, (route, url, r.text)
                assert r.json()["error"] == "URL_NOT_ALLOWED", (route, url, r.text)
    await procs["gateway"].stop()
    await services.start("gateway", remote_fetch_allow_private=True)
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30) as client:
        r = await client.post("/api/r2/store-remote-signed",
                              json={"url": f"{services.gateway_url}/healthz", "passId": "pass:anon:ssrf"})
        assert r.status_code == 200 and r.json()["publicUrl"], r.text
