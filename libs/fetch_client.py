"""The guarded httpx client behind `libs.fetch.fetch` and `libs.fetch.probe` (see libs/fetch.py).

Its own module so that httpx, httpcore, h11 and anyio are imported on the first fetch, not
when a service starts.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from collections.abc import Iterable

import httpcore
import httpx

from libs.errors import InvalidInputError, ServiceUnavailableError
from libs.fetch import FetchPolicy, check_scheme, not_allowed


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Every TCP connection of a guarded client: resolve, check, connect to the checked address.

    TLS still verifies the certificate against the URL's host name (httpcore passes the
    origin's host as the server name), so connecting by address changes nothing for HTTPS."""

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        address = await self.policy.address_for(host, port)
        return await self.inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                            socket_options=socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise not_allowed("unix sockets are never fetched")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying TLS context for every guarded client (loading the CA bundle costs ~10 ms)."""
    return httpx.create_ssl_context()


def guarded_client(policy: FetchPolicy, timeout_s: float | None = None) -> httpx.AsyncClient:
    """An httpx client whose every connection goes through `GuardedBackend` (no proxies from the
    environment: a proxy would make the connection, not us)."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    # httpx has no public parameter for the network backend; the pool it builds is replaced by
    # the same pool over the guarded backend (tests/libs/test_fetch.py fails if this stops working)
    transport._pool = httpcore.AsyncConnectionPool(ssl_context=_ssl_context(),
                                                   network_backend=GuardedBackend(policy))
    return httpx.AsyncClient(transport=transport, timeout=timeout_s or policy.timeout_s, follow_redirects=True,
                             max_redirects=policy.max_redirects, trust_env=False)


async def fetch_guarded(url: str, policy: FetchPolicy) -> tuple[bytes, str]:
    """`libs.fetch.fetch`."""
    check_scheme(url)
    try:
        async with asyncio.timeout(policy.timeout_s), guarded_client(policy) as client, \
                client.stream("GET", url) as response:
            if response.status_code >= 400:
                raise InvalidInputError(f"download failed with HTTP {response.status_code}", code="FETCH_FAILED",
                                        upstream_status=response.status_code)
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > policy.max_bytes:
                raise InvalidInputError("remote file too large", code="FILE_TOO_LARGE")
            chunks, size = [], 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > policy.max_bytes:
                    raise InvalidInputError("remote file too large", code="FILE_TOO_LARGE")
                chunks.append(chunk)
            content_type = response.headers.get("content-type", "application/octet-stream").split(";")[0]
            return b"".join(chunks), content_type.strip()
    except httpx.TooManyRedirects as exc:
        raise InvalidInputError("too many redirects", code="FETCH_FAILED") from exc
    except httpx.UnsupportedProtocol as exc:
        raise InvalidInputError("a redirect led to an unsupported URL", code="INVALID_URL") from exc
    except (httpx.HTTPError, TimeoutError) as exc:
        raise ServiceUnavailableError(f"download failed: {type(exc).__name__}") from exc


async def probe_guarded(url: str, policy: FetchPolicy, timeout_s: float) -> None:
    """`libs.fetch.probe`."""
    check_scheme(url)
    try:
        async with asyncio.timeout(timeout_s), guarded_client(policy, timeout_s) as client, \
                client.stream("GET", url):
            return
    except InvalidInputError as exc:
        if exc.instance_code == "URL_NOT_ALLOWED":
            raise
    except (httpx.HTTPError, TimeoutError):
        return
