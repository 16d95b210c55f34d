"""Browser fixtures: the real stack serving the studio and ops pages, and headless Debian Chromium.

The browser is the system's `/usr/bin/chromium` (installed by `scripts/system-deps.sh`),
driven by Playwright's Python package; without either, these tests skip with the reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, Services

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed (make install)")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium: run scripts/system-deps.sh as root", allow_module_level=True)


@pytest.fixture
def shots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


@pytest.fixture
async def gateway_url(services: Services) -> AsyncIterator[str]:
    """ledger, billing, pipeline and gateway as real processes (20 welcome credits per new pass id)."""
    await services.start_all(welcome_credits=20)
    yield services.gateway_url


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        await chromium.close()


@pytest.fixture
async def page(browser: Any) -> AsyncIterator[Any]:
    context = await browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    tab = await context.new_page()
    tab.js_errors = []  # uncaught exceptions in the page: a test ends by asserting there were none
    tab.on("pageerror", lambda exc: tab.js_errors.append(str(exc)))
    yield tab
    await context.close()
