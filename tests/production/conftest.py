"""Every test here runs the product over the production-shaped database, not a fresh one.

`database_url` is overridden with a copy of tests/ledger/fixtures/pre_mma.sql migrated by our
migrations (`prod_database_url`), so the shared fixtures (settings, services, db, pool) and the
tests imported from other suites run unchanged over it.
"""

from __future__ import annotations

import pytest

from tests.gateway.conftest import client, stack

__all__ = ["client", "stack"]


@pytest.fixture
async def database_url(prod_database_url: str) -> str:
    return prod_database_url
