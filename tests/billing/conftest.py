"""Billing tests run the real ledger and billing processes on a fresh NATS and database."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
async def ledger(services: Any) -> Any:
    return await services.start("ledger")
