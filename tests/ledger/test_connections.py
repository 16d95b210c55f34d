"""The ledger's pool never hands out a connection a broken one left behind; an ordinary error keeps it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from services.ledger.adapters.pg import create_pool

PID = "select pg_backend_pid()"


async def left_mid_protocol(conn: Any) -> None:
    """asyncpg's error for a connection whose server's error was read before its close."""
    raise asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")


async def bad_cast(conn: Any) -> None:
    await conn.fetchval("select 'x'::int")


@pytest.mark.parametrize(("fail", "error", "kept"), [
    (left_mid_protocol, asyncpg.InternalClientError, False),  # broken: closed on release, never reused
    (bad_cast, asyncpg.DataError, True),  # an ordinary failed statement: no reconnect for nothing
], ids=["broken_connection_replaced", "ordinary_error_keeps_it"])
async def test_the_pool_reuses_a_connection_only_after_an_ordinary_error(
        database_url: str, fail: Callable[[Any], Awaitable[None]], error: type[Exception], kept: bool) -> None:
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            first = await conn.fetchval(PID)
        with pytest.raises(error):
            async with pool.acquire() as conn:
                await fail(conn)
        async with pool.acquire() as conn:
            assert (await conn.fetchval(PID) == first) is kept
    finally:
        await pool.close()
