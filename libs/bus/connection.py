"""The process's NATS connection: opened with retries while the server comes up, reconnecting forever after.

The URL may list several servers, comma-separated (`nats://a:4222,nats://b:4222,nats://c:4222`, the
members of a cluster): the client starts with one, learns the others from the cluster's gossip, and
reconnects to whichever answers when its server goes away.
"""

from __future__ import annotations

import nats
import nats.errors
import stamina
import structlog
from nats.aio.client import Client as NatsClient

from libs.bus.inline import inline_request_replies
from libs.errors import ServiceUnavailableError

log = structlog.get_logger("bus")

# what a server that is still starting (or not there yet) answers a connect with
NOT_UP_YET: tuple[type[Exception], ...] = (OSError, nats.errors.NoServersError, nats.errors.TimeoutError)
CONNECT_RETRY_S = 0.25


async def _on_error(exc: Exception) -> None:
    log.warning("bus.connection_error", error=repr(exc))


async def _on_disconnected() -> None:
    log.warning("bus.disconnected")


async def _on_reconnected() -> None:
    log.info("bus.reconnected")


def server_list(url: str) -> list[str]:
    """`url` split on commas, blanks dropped: one entry per server of a cluster."""
    servers = [part.strip() for part in url.split(",") if part.strip()]
    if not servers:
        raise ValueError("the NATS URL names no server")
    return servers


async def open_connection(url: str, name: str, timeout_s: float) -> NatsClient:
    """Connect, trying every 0.25 s for up to `timeout_s`; ServiceUnavailableError when NATS never answers."""
    try:
        async for attempt in stamina.retry_context(
            on=NOT_UP_YET, attempts=None, timeout=timeout_s, wait_initial=CONNECT_RETRY_S,
            wait_max=CONNECT_RETRY_S, wait_jitter=0.0, wait_exp_base=1.0,
        ):
            with attempt:
                nc = await nats.connect(
                    server_list(url),
                    name=name,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.25,
                    connect_timeout=2,
                    error_cb=_on_error,
                    disconnected_cb=_on_disconnected,
                    reconnected_cb=_on_reconnected,
                    pending_size=64 * 1024 * 1024,
                )
                break
    except NOT_UP_YET as exc:
        raise ServiceUnavailableError(f"NATS at {url} is not answering") from exc
    await inline_request_replies(nc)  # `nc.request` replies resolve as they are read (inline.py)
    log.info("bus.connected", url=url, client=name)
    return nc
