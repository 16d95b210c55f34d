"""The studio and ops console in Chromium over the migrated production-shaped database.

The browser suite's happy path runs here unchanged (imported, so collected again with this
directory's `database_url`); it skips with the browser suite when Chromium is missing.
"""

from __future__ import annotations

from tests.browser.conftest import browser, gateway_url, page, shots
from tests.browser.test_pages import test_studio_happy_path_then_ops_console

__all__ = ["browser", "gateway_url", "page", "shots", "test_studio_happy_path_then_ops_console"]
