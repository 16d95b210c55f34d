"""Admin credit changes happen once per Idempotency-Key: a retried request never credits twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from libs.schemas import new_id
from tests.conftest import Services
from tests.gateway.support import ADMIN


@pytest.fixture
async def admin_client(services: Services) -> AsyncIterator[httpx.AsyncClient]:
    """The services a credit change needs (no pipeline), and an HTTP client on the gateway."""
    for name in ("ledger", "billing", "gateway"):
        await services.start(name)
    async with httpx.AsyncClient(base_url=services.gateway_url, timeout=30.0) as http:
        yield http


async def admin_rows(db: Any, pass_id: str) -> list[tuple[str, int]]:
    rows = await db.fetch("select mg_id, mg_delta from mega_generations where mg_record_type = 'credit_transaction'"
                          " and mg_pass_id = $1 and mg_ref_type = 'admin' order by mg_created_at", pass_id)
    return [(r["mg_id"], r["mg_delta"]) for r in rows]


async def balance(client: httpx.AsyncClient, pass_id: str) -> int:
    return int((await client.get("/credits/balance", params={"passId": pass_id})).json()["balance"])


def adjust(client: httpx.AsyncClient, pass_id: str, delta: int, key: str | None,
           in_body: bool = False) -> Any:
    body: dict[str, Any] = {"passId": pass_id, "delta": delta, "reason": "goodwill"}
    headers = dict(ADMIN)
    if key is not None and in_body:
        body["idempotencyKey"] = key
    elif key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/admin/credits/adjust", json=body, headers=headers)


async def test_a_retried_adjust_credits_once_and_answers_the_first_result(admin_client: httpx.AsyncClient,
                                                                          db: Any) -> None:
    """Same key twice (header, then body) is one ledger row and the same answer; a new key is a second row."""
    pass_id = f"pass:anon:{new_id()}"
    first = await adjust(admin_client, pass_id, 7, "refund-ticket-1")
    assert first.status_code == 200, first.text
    assert (first.json()["creditsBefore"], first.json()["creditsAfter"]) == (0, 7)
    assert "Idempotent-Replayed" not in first.headers
    again = await adjust(admin_client, pass_id, 7, "refund-ticket-1", in_body=True)
    assert again.status_code == 200, again.text
    assert again.headers["Idempotent-Replayed"] == "true"
    same = ("passId", "creditsBefore", "creditsAfter", "balance", "expiresAt")
    assert {k: again.json()[k] for k in same} == {k: first.json()[k] for k in same}
    assert await admin_rows(db, pass_id) == [(f"credit_transaction:admin:{pass_id}:refund-ticket-1", 7)]
    assert await balance(admin_client, pass_id) == 7

    other = await adjust(admin_client, pass_id, 7, "refund-ticket-2")
    assert other.status_code == 200 and (other.json()["creditsBefore"], other.json()["creditsAfter"]) == (7, 14)
    # a retry of the first key after the second change still answers the first result
    late = await adjust(admin_client, pass_id, 7, "refund-ticket-1")
    assert (late.json()["creditsBefore"], late.json()["creditsAfter"]) == (0, 7)
    assert [delta for _id, delta in await admin_rows(db, pass_id)] == [7, 7]
    assert await balance(admin_client, pass_id) == 14


async def test_concurrent_retries_with_one_key_credit_once(admin_client: httpx.AsyncClient, db: Any) -> None:
    """Five copies of one request racing (a client retrying after timeouts) make one credit."""
    pass_id = f"pass:anon:{new_id()}"
    answers = await asyncio.gather(*(adjust(admin_client, pass_id, 3, "burst") for _ in range(5)))
    assert [a.status_code for a in answers] == [200] * 5, [a.text for a in answers]
    assert {a.json()["creditsAfter"] for a in answers} == {3}
    assert len(await admin_rows(db, pass_id)) == 1
    assert await balance(admin_client, pass_id) == 3


async def test_an_adjust_without_a_key_is_refused_before_any_change(admin_client: httpx.AsyncClient,
                                                                    db: Any) -> None:
    """No Idempotency-Key: 400 MISSING_IDEMPOTENCY_KEY in the legacy error shape, nothing credited."""
    pass_id = f"pass:anon:{new_id()}"
    answer = await adjust(admin_client, pass_id, 5, None)
    assert answer.status_code == 400
    body = answer.json()
    assert body["ok"] is False and body["error"] == "MISSING_IDEMPOTENCY_KEY" and body["message"]
    assert body["requestId"]
    bad = await adjust(admin_client, pass_id, 5, "x" * 201)
    assert bad.status_code == 400 and bad.json()["error"] == "INVALID_IDEMPOTENCY_KEY"
    assert await admin_rows(db, pass_id) == []
    assert await balance(admin_client, pass_id) == 0


async def test_a_key_reused_for_another_change_is_a_conflict(admin_client: httpx.AsyncClient, db: Any) -> None:
    """The same key with another delta is not a retry: 409 IDEMPOTENCY_CONFLICT, the first change stands."""
    pass_id = f"pass:anon:{new_id()}"
    assert (await adjust(admin_client, pass_id, 4, "k-1")).status_code == 200
    clash = await adjust(admin_client, pass_id, 40, "k-1")
    assert clash.status_code == 409, clash.text
    assert clash.json()["ok"] is False and clash.json()["error"] == "IDEMPOTENCY_CONFLICT"
    assert [delta for _id, delta in await admin_rows(db, pass_id)] == [4]
    # keys belong to one pass id: another customer may use the same one
    other = f"pass:anon:{new_id()}"
    assert (await adjust(admin_client, other, 40, "k-1")).json()["creditsAfter"] == 40


async def test_credits_add_uses_the_key_when_given(admin_client: httpx.AsyncClient, db: Any) -> None:
    """/credits/add: with a key a retry credits once; without one each request is its own grant (E2)."""
    pass_id = f"pass:anon:{new_id()}"
    keyed = {**ADMIN, "Idempotency-Key": "topup-77"}
    answers = [await admin_client.post("/credits/add", headers=keyed, json={"customerId": pass_id, "amount": 2})
               for _ in range(2)]
    assert [a.json()["newBalance"] for a in answers] == [2, 2]
    for _ in range(2):
        bare = await admin_client.post("/credits/add", headers=ADMIN, json={"customerId": pass_id, "amount": 1})
        assert bare.status_code == 200, bare.text
    assert sorted(delta for _id, delta in await admin_rows(db, pass_id)) == [1, 1, 2]
    assert await balance(admin_client, pass_id) == 4
