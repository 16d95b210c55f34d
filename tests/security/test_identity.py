"""No customer can act as another (issue #15): route by route, with no token, another customer's token,
a forged token, an expired one and the owner's. Only the owner (or the admin token) is served, and the
victim's balance, history and generations do not move."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx

from tests.conftest import Services
from tests.gateway.support import ADMIN, data_url, new_user, png_bytes, read_sse, signed_in, user_token
from tests.helpers import wait_for

FORGED_SECRET = "a-wrong-secret-of-enough-length-0123456789"


@dataclass(frozen=True)
class Attempt:
    method: str
    path: str
    json: dict[str, Any] | None = None
    params: dict[str, str] | None = None


def attempts(victim: str, gid: str) -> list[Attempt]:
    """One request per route that touches a customer's credits, history or generations, in the victim's name."""
    png = data_url(png_bytes())
    return [
        Attempt("POST", "/mma/still/create", {"passId": victim, "inputs": {"brief": "a stolen still"}}),
        Attempt("POST", "/editorial/generate", {"passId": victim, "brief": "a stolen legacy still"}),
        Attempt("GET", "/credits/balance", params={"passId": victim}),
        Attempt("GET", f"/history/pass/{victim}"),
        Attempt("GET", "/history", params={"customerId": victim}),
        Attempt("DELETE", f"/history/{gid}"),
        Attempt("POST", "/mma/events", {"passId": victim, "event_type": "like", "generation_id": gid}),
        Attempt("POST", "/feedback/like", {"passId": victim, "generationId": gid, "resultType": "image"}),
        Attempt("POST", f"/mma/generations/{gid}/cancel", {"passId": victim}),
        Attempt("POST", "/api/r2/upload-signed", {"passId": victim, "dataUrl": png, "kind": "product"}),
        Attempt("GET", f"/mma/generations/{gid}"),
        Attempt("GET", f"/mma/stream/{gid}"),
        Attempt("POST", f"/mma/still/{gid}/tweak", {"passId": victim, "feedback": {"still_feedback": "mine now"}}),
        Attempt("POST", "/mma/video/animate", {"passId": victim, "assets": {"input_still_generation_id": gid},
                                               "inputs": {"motion_user_brief": "spin"}}),
        Attempt("POST", "/sessions/start", {"passId": victim}),
        Attempt("POST", "/api/welcome-matcha/claim", {"passId": victim}),
        Attempt("GET", f"/history/customer/{victim}"),
        Attempt("POST", "/api/checkout/create", {"passId": victim, "qty": 1}),
        Attempt("POST", f"/mma/generations/{gid}/refresh", {"passId": victim}),
    ]


def assert_refused(r: httpx.Response, status: int, what: str) -> None:
    assert r.status_code == status, (what, r.status_code, r.text[:300])
    body = r.json()
    code = "NOT_AUTHENTICATED" if status == 401 else "FORBIDDEN"
    assert body["error"] == code, (what, body)
    if r.request.url.path.startswith("/mma/"):
        assert "ok" not in body and body["status"] == "error", (what, body)  # the MMA error shape
    else:
        assert body["ok"] is False and body["requestId"], (what, body)  # the legacy shape


async def send(client: httpx.AsyncClient, a: Attempt, headers: dict[str, str]) -> httpx.Response:
    return await client.request(a.method, a.path, json=a.json, params=a.params, headers=headers)


async def victim_state(db: asyncpg.Connection, pass_id: str) -> tuple[Any, ...]:
    """Everything an attacker could move: balance, credit rows, generations, deletions, events, sessions."""
    credits = await db.fetchval("select mg_credits from mega_customers where mg_pass_id = $1", pass_id)
    rows = await db.fetch("select mg_record_type, count(*) as n, count(mg_deleted_at) as deleted "
                          "from mega_generations where mg_pass_id = $1 group by 1 order by 1", pass_id)
    return credits, [tuple(r) for r in rows]


async def test_no_route_lets_a_stranger_act_as_a_signed_in_customer(services: Services, db: asyncpg.Connection,
                                                                    ) -> None:
    """Every customer route, for a `pass:user:` victim: 401 with no, forged or expired token, 403 with
    another customer's token (in the route's error shape), nothing moves; the owner is served."""
    await services.start_all(welcome_credits=20)
    s = services.settings
    victim, stranger = new_user(), new_user()
    victim_uid, stranger_uid = victim.split(":")[2], stranger.split(":")[2]
    owner = signed_in(s, victim)
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=60) as client:
        created = await client.post("/mma/still/create", headers=owner,
                                    json={"passId": victim, "inputs": {"brief": "the victim's still"}})
        assert created.status_code == 200, created.text
        gid = created.json()["generation_id"]
        sse_url = created.json()["sse_url"]
        assert sse_url.startswith(f"/mma/stream/{gid}?grant="), sse_url  # an EventSource sends no headers
        done = await read_sse(client, sse_url, timeout=60)  # the grant alone reads the owner's stream
        assert done.named("done"), done.events

        async def settled() -> tuple[Any, ...] | None:
            """The ledger has projected the run's end (it follows every step row in the stream)."""
            status = await db.fetchval("select mg_mma_status from mega_generations where mg_id = $1",
                                       f"generation:{gid}")
            state = await victim_state(db, victim)
            return state if status == "done" and state[0] == 19 else None

        before = await wait_for(settled, 20, what="the victim's generation projected")

        tokens = {
            "no token": ({"X-Mina-Pass-Id": victim}, 401),
            "forged": ({**owner, "Authorization": f"Bearer {user_token(s, victim_uid, secret=FORGED_SECRET)}"}, 401),
            "expired": ({**owner, "Authorization": f"Bearer {user_token(s, victim_uid, exp_in=-120)}"}, 401),
            "null": ({**owner, "Authorization": "Bearer null"}, 401),
            "another customer's": ({**owner, "Authorization": f"Bearer {user_token(s, stranger_uid)}"}, 403),
        }
        tried = 0
        for kind, (headers, status) in tokens.items():
            for attempt in attempts(victim, gid):
                r = await send(client, attempt, headers)
                assert_refused(r, status, f"{kind}: {attempt.method} {attempt.path}")
                tried += 1
        # the stranger signed in as themselves still cannot reach the victim's generation
        as_self = signed_in(s, stranger)
        for attempt in (Attempt("GET", f"/mma/generations/{gid}"), Attempt("GET", f"/mma/stream/{gid}"),
                        Attempt("POST", f"/mma/generations/{gid}/cancel", {}),
                        Attempt("POST", f"/mma/generations/{gid}/refresh", {}),
                        Attempt("POST", f"/mma/still/{gid}/tweak", {"feedback": {"still_feedback": "x"}}),
                        Attempt("POST", "/mma/video/animate", {"assets": {"input_still_generation_id": gid}})):
            assert_refused(await send(client, attempt, as_self), 403, f"as self: {attempt.method} {attempt.path}")
            tried += 1
        gone = await client.delete(f"/history/{gid}", headers=as_self)
        assert gone.status_code == 200 and gone.json()["deleted"] is False
        assert tried >= 80
        assert await victim_state(db, victim) == before, "the victim's balance or history moved"
        assert (await db.fetchval("select count(*) from mega_customers where mg_pass_id = $1", stranger)) <= 1

        # the owner (and the admin token) are served on the same routes
        balance = await client.get("/credits/balance", params={"passId": victim}, headers=owner)
        assert balance.status_code == 200 and balance.json()["balance"] == 19, balance.text
        assert (await client.get(f"/history/pass/{victim}", headers=owner)).json()["generations"]
        assert (await client.get(f"/mma/generations/{gid}", headers=owner)).json()["state"] == "done"
        assert (await read_sse(client, f"/mma/stream/{gid}", headers=owner)).named("done")
        assert (await client.post(f"/mma/generations/{gid}/cancel", headers=owner)).status_code == 409  # finished
        liked = await client.post("/mma/events", headers=owner, json={"passId": victim, "event_type": "like",
                                                                      "generation_id": gid})
        assert liked.status_code == 200 and liked.json()["passId"] == victim
        up = await client.post("/api/r2/upload-signed", headers=owner,
                               json={"passId": victim, "dataUrl": data_url(png_bytes()), "kind": "product"})
        assert up.status_code == 200, up.text
        admin = await client.get("/credits/balance", params={"passId": victim}, headers=ADMIN)
        assert admin.status_code == 200 and admin.json()["balance"] == 19
        assert (await client.get(f"/mma/generations/{gid}", headers=ADMIN)).status_code == 200
        mine = await client.delete(f"/history/{gid}", headers=owner)
        assert mine.json()["deleted"] is True


async def test_email_and_shopify_ids_need_their_verified_email_or_linked_user(services: Services,
                                                                            db: asyncpg.Connection) -> None:
    """`pass:email:` needs a token with that verified email; `pass:shopify:<id>` (and a bare legacy id)
    the user the id is linked to in mega_customers (the ledger tells the gateway); anon stays open."""
    await services.start_all(welcome_credits=0)  # the hand-made row below is not a customer this product created
    s = services.settings
    uid = str(uuid.uuid4())
    shop = f"{uuid.uuid4().int % 10**12}"
    await db.execute("insert into mega_customers (mg_pass_id, mg_shopify_customer_id, mg_user_id, mg_credits) "
                     "values ($1, $2, $3::uuid, 9)", f"pass:shopify:{shop}", shop, uid)
    linked = {"Authorization": f"Bearer {user_token(s, uid)}"}
    other = {"Authorization": f"Bearer {user_token(s, str(uuid.uuid4()))}"}
    email_id = f"pass:email:ana.{uuid.uuid4().hex[:6]}@example.com"
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=60) as client:
        for claim in ({"passId": f"pass:shopify:{shop}"}, {"customerId": shop}):
            assert_refused(await client.get("/credits/balance", params=claim), 401, "shopify, no token")
            assert_refused(await client.get("/credits/balance", params=claim, headers=other), 403, "shopify, other")
            ok = await client.get("/credits/balance", params=claim, headers=linked)
            assert ok.status_code == 200 and ok.json()["balance"] == 9, ok.text
        spend = await client.post("/mma/still/create", headers={**linked, "X-Mina-Pass-Id": f"pass:shopify:{shop}"},
                                  json={"inputs": {"brief": "bought with shopify credits"}})
        assert spend.status_code == 200, spend.text

        email = email_id.split(":", 2)[2]
        assert_refused(await client.get("/credits/balance", params={"passId": email_id}), 401, "email, no token")
        unverified = signed_in(s, email_id, verified=False)
        assert_refused(await client.get("/credits/balance", params={"passId": email_id}, headers=unverified), 403,
                       "email, unverified")
        ok = await client.get("/credits/balance", params={"passId": email_id}, headers=signed_in(s, email_id))
        assert ok.status_code == 200 and ok.json()["passId"] == email_id
        upper = {"Authorization": f"Bearer {user_token(s, str(uuid.uuid4()), email.upper())}"}
        assert (await client.get("/credits/balance", params={"passId": email_id}, headers=upper)).status_code == 200

        anon = f"pass:anon:{uuid.uuid4()}"
        assert (await client.get("/credits/balance", params={"passId": anon})).status_code == 200
        assert (await client.get(f"/history/pass/{anon}")).status_code == 200


async def test_admin_by_allowlist_as_well_as_by_token(services: Services, db: asyncpg.Connection) -> None:
    """An allowlisted user (by user id, else by email) is an admin; another user is 403
    `{error:"Unauthorized"}`, no token 401; the admin token still works."""
    await services.start_all(welcome_credits=0)
    s = services.settings
    admin_uid, by_email_uid, plain_uid = (str(uuid.uuid4()) for _ in range(3))
    await db.execute("insert into mega_customers (mg_pass_id, mg_user_id, mg_admin_allowlist) values "
                     "($1, $2::uuid, true)", f"pass:user:{admin_uid}", admin_uid)
    await db.execute("insert into mega_customers (mg_pass_id, mg_email, mg_admin_allowlist) values "
                     "('pass:email:boss@example.com', 'boss@example.com', true)")
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=60) as client:
        for headers in ({"Authorization": f"Bearer {user_token(s, admin_uid)}"},
                        {"Authorization": f"Bearer {user_token(s, by_email_uid, 'Boss@Example.com')}"}, ADMIN):
            r = await client.get("/admin/summary", headers=headers)
            assert r.status_code == 200 and r.json()["ok"] is True, r.text
            assert (await client.get("/ops/api/summary", headers=headers)).status_code == 200
        me = await client.get("/me", headers={"Authorization": f"Bearer {user_token(s, admin_uid)}"})
        assert me.json()["isAdmin"] is True and me.json()["user"]["id"] == admin_uid, me.text
        not_me = await client.get("/me", headers={"Authorization": f"Bearer {user_token(s, plain_uid)}"})
        assert not_me.json()["isAdmin"] is False
        plain = await client.get("/admin/summary", headers={"Authorization": f"Bearer {user_token(s, plain_uid)}"})
        assert plain.status_code == 403 and plain.json()["error"] == "Unauthorized", plain.text
        unverified = {"Authorization": f"Bearer {user_token(s, plain_uid, 'boss@example.com', verified=False)}"}
        assert (await client.get("/admin/summary", headers=unverified)).status_code == 403
        # the user id decides first: a user whose own row is not allowlisted is no admin by email
        await db.execute("insert into mega_customers (mg_pass_id, mg_user_id) values ($1, $2::uuid)",
                         f"pass:user:{plain_uid}", plain_uid)
        by_id_first = {"Authorization": f"Bearer {user_token(s, plain_uid, 'boss@example.com')}"}
        assert (await client.get("/admin/summary", headers=by_id_first)).status_code == 403
        none = await client.get("/admin/summary")
        assert none.status_code == 401 and none.json()["error"] == "Unauthorized"
