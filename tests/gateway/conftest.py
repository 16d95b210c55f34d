"""Gateway fixtures: the real stack (ledger, billing, pipeline, gateway) and an HTTP client on it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from tests.conftest import Services


@pytest.fixture
async def stack(services: Services) -> Services:
    """All four services, with 20 welcome credits for every new pass id."""
    await services.start_all(welcome_credits=20)
    return services


@pytest.fixture
async def client(stack: Services) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=stack.gateway_url, timeout=30.0) as http:
        yield http


