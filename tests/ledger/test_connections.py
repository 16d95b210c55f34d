"""The ledger's pool never hands out a connection a broken one left behind; an ordinary error keeps it."""

from __future__ import annotations

import asyncpg
import pytest

from services.ledger.adapters.pg import create_pool

PID = "select pg_backend_pid()"


async def test_a_connection_left_mid_protocol_is_closed_on_release(database_url: str) -> None:
    """asyncpg's "another operation is in progress" (a server's error read before its close): never reused."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            first = await conn.fetchval(PID)
        with pytest.raises(asyncpg.InternalClientError):
            async with pool.acquire() as conn:
                raise asyncpg.InternalClientError("cannot switch to state 12; another operation (2) is in progress")
        async with pool.acquire() as conn:
            assert await conn.fetchval(PID) != first
    finally:
        await pool.close()


async def test_an_ordinary_error_keeps_the_connection(database_url: str) -> None:
    """A failed statement (a bad cast) leaves the connection in the pool: no reconnect for nothing."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            first = await conn.fetchval(PID)
        with pytest.raises(asyncpg.DataError):
            async with pool.acquire() as conn:
                await conn.fetchval("select 'x'::int")
        async with pool.acquire() as conn:
            assert await conn.fetchval(PID) == first
    finally:
        await pool.close()
