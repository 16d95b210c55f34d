"""The ledger's pool never hands out a connection a broken one left behind; an ordinary error keeps it."""

from __future__ import annotations

import asyncpg
import pytest

from services.ledger.adapters.pg import BROKEN_CONNECTION, create_pool

PID = "select pg_backend_pid()"


async def test_a_connection_whose_server_went_away_is_replaced_not_reused(database_url: str) -> None:
    """The server ends the pooled connection's backend: that block fails retryably, the next one works."""
    pool = await create_pool(database_url, min_size=1, max_size=1)
    admin = await asyncpg.connect(database_url)
    try:
        async with pool.acquire() as conn:
            first = await conn.fetchval(PID)
        assert await admin.fetchval("select pg_terminate_backend($1)", first)
        with pytest.raises(BROKEN_CONNECTION):  # which one depends on when the close is read
            async with pool.acquire() as conn:
                await conn.fetchval(PID)
        async with pool.acquire() as conn:
            assert await conn.fetchval(PID) != first
    finally:
        await admin.close()
        await pool.close()


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
