"""asyncpg connections and pools: jsonb in and out as Python objects, retried start-up.

The ledger is the only process that talks to Postgres; it may start before the
database answers (compose, `make up`), so connecting retries (stamina) for a bounded time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol, TypeVar

import asyncpg
import orjson
import stamina

from libs.errors import ServiceUnavailableError

_CONNECT_ERRORS = (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
                   asyncpg.TooManyConnectionsError, asyncio.TimeoutError)


# Postgres is away, restarting or overloaded, or the transaction lost a race: says nothing about
# the message or request, so the caller retries (ServiceUnavailableError) instead of giving it up.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection left mid-protocol by a server that went away (see GuardedPool)
    asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError,
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, crash shutdown, query cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # disk full, out of memory, too many connections
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock
    asyncpg.exceptions.ObjectNotInPrerequisiteStateError,  # the database is not accepting connections
)

# Of those, the ones that say the connection itself is broken or going (not a lost race, not a full
# disk): such a connection is closed rather than given back to the pool (GuardedPool).
BROKEN_CONNECTION: tuple[type[BaseException], ...] = (
    OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.InternalClientError,
    asyncpg.exceptions.OperatorInterventionError,
)

Row = Mapping[str, Any]
"""A row as asyncpg decodes it, column -> value: the database is the boundary, its values untyped."""


class Conn(Protocol):
    """What the ledger uses of an asyncpg connection or pooled proxy (asyncpg ships no types)."""

    async def execute(self, query: str, *args: object) -> str: ...

    async def executemany(self, command: str, args: Iterable[Sequence[object]]) -> None: ...

    async def fetch(self, query: str, *args: object) -> list[Row]: ...

    async def fetchrow(self, query: str, *args: object) -> Row | None: ...

    async def fetchval(self, query: str, *args: object) -> Any: ...  # one column of one row, as decoded

    def transaction(self, *, isolation: str | None = None,
                    readonly: bool = False) -> AbstractAsyncContextManager[object]: ...


class Pool(Protocol):
    """What the handlers use of the asyncpg pool: a connection for the length of a block."""

    def acquire(self) -> AbstractAsyncContextManager[Conn]: ...


R = TypeVar("R")
Q = TypeVar("Q")
D = TypeVar("D")


def db_unavailable_is_retryable(handler: Callable[[Q, D], Awaitable[R]]) -> Callable[[Q, D], Awaitable[R]]:
    """`handler` with Postgres being away raised as ServiceUnavailableError (retryable).

    Every other failure stays what it is: a bug is not retryable, so the bus bounds it.
    """

    async def run(req: Q, deps: D) -> R:
        try:
            return await handler(req, deps)
        except UNAVAILABLE as exc:
            raise ServiceUnavailableError(f"Postgres unavailable: {type(exc).__name__}: {exc}") from exc

    run.__name__ = getattr(handler, "__name__", "handler")
    run.__doc__ = handler.__doc__
    return run


def _encode_json(value: object) -> str:
    return orjson.dumps(value).decode()


async def init_connection(conn: asyncpg.Connection) -> None:
    """jsonb/json columns take and give dicts and lists directly."""
    for type_name in ("jsonb", "json"):
        await conn.set_type_codec(type_name, encoder=_encode_json, decoder=orjson.loads, schema="pg_catalog")


async def _until_up(open_: Callable[[], Awaitable[R]], timeout_s: float, wait_s: float) -> R:
    """`open_()` retried every `wait_s` while Postgres refuses connections, for up to `timeout_s`.

    stamina logs each retry (`stamina.retry_scheduled`, with its cause).
    """
    try:
        async for attempt in stamina.retry_context(
            on=_CONNECT_ERRORS, attempts=None, timeout=timeout_s,
            wait_initial=wait_s, wait_max=wait_s, wait_jitter=0.0, wait_exp_base=1.0,
        ):
            with attempt:
                return await open_()
    except _CONNECT_ERRORS as exc:
        raise ServiceUnavailableError("Postgres is not answering") from exc
    raise AssertionError("unreachable: stamina yields at least one attempt")


async def connect(dsn: str, timeout_s: float = 30.0) -> asyncpg.Connection:
    """One connection (migrations, reconcile CLI), retried while Postgres comes up."""
    conn: asyncpg.Connection = await _until_up(lambda: asyncpg.connect(dsn, timeout=5), timeout_s, 0.25)
    await init_connection(conn)
    return conn


class PooledConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg is untyped here
    """A pool connection given back without asyncpg's reset query (advisory unlock, CLOSE ALL, UNLISTEN,
    RESET ALL: a round trip to Postgres per release). The ledger keeps no session state on pool
    connections: its advisory locks are transaction-scoped (or on `connect`'s own connections), it
    neither LISTENs nor SETs; an open transaction is still rolled back on release by asyncpg."""

    def get_reset_query(self) -> str:
        return ""


class GuardedPool:
    """The asyncpg pool, but a connection that failed with a connection-level error is closed, not reused.

    A pool connection goes back without a reset query (`PooledConnection`), so nothing on release
    notices one a dying server left mid-protocol: it had sent its error (the query failed, retryably)
    and its close was still on the way; the next query on that connection then failed with
    asyncpg's InternalClientError ("another operation is in progress") and, from a run's start
    read, failed the generation. An error of `BROKEN_CONNECTION` in an acquired block now
    terminates the connection before the pool takes it back (the pool opens a fresh one when needed).
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def acquire(self, timeout: float | None = None) -> AsyncIterator[Conn]:
        async with self.pool.acquire(timeout=timeout) as conn:
            try:
                yield conn
            except BROKEN_CONNECTION:
                conn.terminate()
                raise

    async def close(self) -> None:
        await self.pool.close()


async def create_pool(dsn: str, min_size: int = 1, max_size: int = 10, timeout_s: float = 60.0) -> GuardedPool:
    """The service pool, retried while Postgres comes up (bounded by `timeout_s`)."""
    pool: asyncpg.Pool = await _until_up(
        lambda: asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=init_connection, timeout=5,
                                    command_timeout=60, connection_class=PooledConnection),
        timeout_s, 0.5,
    )
    return GuardedPool(pool)
