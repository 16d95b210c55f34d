"""The welcome claim: once per pass id, shared with the automatic welcome, never for an old customer."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from libs.schemas import ClaimWelcome, CustomerView, EnsureCustomer, EnsureWelcome, WelcomeClaimed
from services.billing.welcome import rolling_expiry
from tests.billing.support import balance_of, credit_rows
from tests.conftest import Services


def test_the_rolling_expiry_only_ever_moves_later() -> None:
    """max(current, now + days); no days means no expiry is set."""
    now = datetime(2026, 3, 1, tzinfo=UTC)
    assert rolling_expiry(None, now, 30) == now + timedelta(days=30)
    assert rolling_expiry(now + timedelta(days=90), now, 30) == now + timedelta(days=90)
    assert rolling_expiry(now - timedelta(days=1), now, 30) == now + timedelta(days=30)
    assert rolling_expiry(now, now, None) is None


async def test_a_claim_credits_once_with_a_rolling_expiry(bus, services: Services, ledger, db) -> None:
    """Two racing claims and a later one: +5 once, expiry 30 days out, then `duplicate` with the same balance."""
    await services.start("billing", credit_expiry_days=30)
    pass_id = "pass:user:0b6f3f5e-7d4c-4e21-9c3a-5f1d2e3a4b5c"
    claim = ClaimWelcome(pass_id=pass_id, user_id=pass_id.removeprefix("pass:user:"), email="new@example.com")
    first, second = await asyncio.gather(*(bus.request(claim, WelcomeClaimed) for _ in range(2)))
    assert sorted([first.outcome, second.outcome]) == ["applied", "duplicate"]
    assert {first.balance, second.balance} == {5}
    again = await bus.request(claim, WelcomeClaimed)
    assert (again.outcome, again.credited, again.balance) == ("duplicate", 0, 5)
    applied = first if first.outcome == "applied" else second
    assert applied.credited == 5 and applied.expires_at is not None
    assert abs((applied.expires_at - (datetime.now(UTC) + timedelta(days=30))).total_seconds()) < 120
    rows = await credit_rows(db, pass_id)
    assert sorted((r["mg_delta"], r["mg_reason"], r["mg_ref_id"]) for r in rows) == \
        [(0, "welcome_expiry", pass_id), (5, "welcome", pass_id)]
    linked = await db.fetchrow("select mg_email, mg_user_id::text as uid from mega_customers where mg_pass_id = $1",
                               pass_id)
    assert (linked["mg_email"], linked["uid"]) == ("new@example.com", claim.user_id)
    assert await balance_of(db, pass_id) == 5


async def test_a_pass_id_welcomed_automatically_has_nothing_left_to_claim(bus, services: Services, ledger,
                                                                          db) -> None:
    """The automatic welcome and the claim are one grant: after 20 automatic credits the claim adds nothing."""
    await services.start("billing", welcome_credits=20)
    pass_id = "pass:user:7f0e1d2c-3b4a-4596-8877-665544332211"
    assert (await bus.request(EnsureWelcome(pass_id=pass_id), CustomerView)).credits == 20
    claimed = await bus.request(ClaimWelcome(pass_id=pass_id), WelcomeClaimed)
    assert (claimed.outcome, claimed.credited, claimed.balance) == ("duplicate", 0, 20)
    assert [r["mg_delta"] for r in await credit_rows(db, pass_id)] == [20]


async def test_a_customer_from_before_this_product_is_not_welcomed(bus, services: Services, ledger, db) -> None:
    """A pass id with an opening-balance row (it existed before the migration) is `ineligible`: no credit."""
    await services.start("billing")
    pass_id = "pass:user:11111111-2222-4333-8444-555555555555"
    await bus.request(EnsureCustomer(pass_id=pass_id), CustomerView)
    await db.execute("update mega_customers set mg_credits = 3 where mg_pass_id = $1", pass_id)
    await db.execute("select mega_open_books()")
    claimed = await bus.request(ClaimWelcome(pass_id=pass_id), WelcomeClaimed)
    assert (claimed.outcome, claimed.credited, claimed.balance) == ("ineligible", 0, 3)
    assert [r["mg_reason"] for r in await credit_rows(db, pass_id)] == ["opening_balance"]
