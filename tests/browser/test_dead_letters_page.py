"""The ops console shows what waits in the dead-letter stream, in headless Chromium on the real ledger and gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
from playwright.async_api import expect

from libs.bus import Bus
from libs.schemas import SessionStarted
from tests.conftest import ADMIN_TOKEN, Services
from tests.helpers import wait_for


async def test_a_refused_row_waits_in_the_dead_letters_tab(services: Services, bus: Bus, db: asyncpg.Connection,
                                                           page: Any, shots: Path) -> None:
    """A session row Postgres refuses appears in the Dead letters tab with its consumer, subject and reason."""
    await db.execute("alter table mega_generations add constraint test_refuse check (mg_id <> 'session:refused') "
                     "not valid")
    await services.start("ledger")
    await services.start("gateway")
    await bus.publish(SessionStarted(session_id="refused", pass_id="pass:email:page@example.com"))

    await page.goto(f"{services.gateway_url}/ops")
    await page.get_by_test_id("token").fill(ADMIN_TOKEN)
    await page.get_by_test_id("token-submit").click()
    await page.locator("#tabs button[data-tab=dead]").click()
    row = page.locator("#dead-list tr", has_text="mma.evt.cust.session.refused")

    async def shown() -> bool:
        """The tab reads once: refresh until the ledger has given the row up."""
        if await row.count():
            return True
        await page.locator("#dead-refresh").click()
        return False

    await wait_for(shown, 30, interval=0.5, what="the dead letter in the tab")
    await expect(row).to_have_count(1)
    await expect(page.get_by_test_id("dead-count")).to_have_text("1")
    await expect(page.get_by_test_id("dead-by")).to_have_text("ledger: 1")
    await expect(row.locator("td:nth-child(2)")).to_have_text("ledger")
    await expect(row.locator("td:nth-child(4)")).to_have_text("SessionStarted")
    await expect(row.locator("td:nth-child(6)")).to_contain_text("refused by Postgres")
    await page.screenshot(path=str(shots / "ops-dead-letters.png"), full_page=True)

    await page.locator("#tabs button[data-tab=errors]").click()
    await page.locator("#error-filters button", has_text="INVALID_MESSAGE").click()
    await expect(page.locator("#error-list tr", has_text="refused by Postgres")).to_have_count(1, timeout=20_000)
    assert page.js_errors == []
