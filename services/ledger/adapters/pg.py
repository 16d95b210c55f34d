"""asyncpg connections and pools: jsonb in and out as Python objects, retried start-up.

The ledger is the only process that talks to Postgres; it may start before the
database answers (compose, `make up`), so connecting retries for a bounded time.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import orjson
import structlog

from libs.errors import ServiceUnavailableError

log = structlog.get_logger("ledger.pg")

_CONNECT_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
                   asyncpg.TooManyConnectionsError, asyncio.TimeoutError)


def _encode_json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    """jsonb/json columns take and give dicts and lists directly."""
    for type_name in ("jsonb", "json"):
        await conn.set_type_codec(type_name, encoder=_encode_json, decoder=orjson.loads, schema="pg_catalog")


async def connect(dsn: str, timeout_s: float = 30.0) -> asyncpg.Connection:
    """One connection (migrations, reconcile CLI), retried while Postgres comes up."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            break
        except _CONNECT_ERRORS as exc:
            if time.monotonic() > deadline:
                raise ServiceUnavailableError("Postgres is not answering") from exc
            await asyncio.sleep(0.25)
    await init_connection(conn)
    return conn


async def create_pool(dsn: str, min_size: int = 1, max_size: int = 10, timeout_s: float = 60.0) -> asyncpg.Pool:
    """The service pool, retried while Postgres comes up (bounded by `timeout_s`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, init=init_connection, timeout=5,
                command_timeout=60,
            )
            break
        except _CONNECT_ERRORS as exc:
            if time.monotonic() > deadline:
                raise ServiceUnavailableError("Postgres is not answering") from exc
            log.warning("ledger.db_connect_retry", error=repr(exc))
            await asyncio.sleep(0.5)
    assert pool is not None
    return pool
