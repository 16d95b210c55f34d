"""One guard for every server-side fetch (gateway and pipeline): public hosts only, bounded.

A URL a customer (or a provider) gives us must not make us fetch from inside our network:
cloud metadata at 169.254.169.254, NATS monitoring, Postgres, the gateway's own admin
routes. The check sits where connections are made (an httpcore network backend), so every
redirect hop and every retry passes through it, and the address we connect to is the one
we checked: no second DNS lookup that a rebinding name could answer differently.

Our own asset store's URLs are never fetched over the network (the store reads them), so
they need no exemption. `MMA_FETCH_ALLOW_HOSTS` names hosts (or host:port) that may be
private: the test fixtures set it for the wire servers they run on loopback; it is empty
by default. `MMA_REMOTE_FETCH_ALLOW_PRIVATE` lifts the address check entirely (local
experiments only). Size and time are bounded by settings.

The httpx client itself is in libs/fetch_client.py, imported on the first fetch: a service
does not need httpx (and its httpcore, h11, anyio) to start.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from libs.errors import InvalidInputError
from libs.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # a NAT64 gateway would take these to the embedded IPv4 address
SCHEMES = ("http", "https")


def not_allowed(message: str) -> InvalidInputError:
    return InvalidInputError(message, code="URL_NOT_ALLOWED")


def is_public(address: IPAddress) -> bool:
    """A globally routable unicast address (IPv4 inside IPv6 judged as the IPv4 address it carries)."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return is_public(address.ipv4_mapped)
        if address in _NAT64:
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return address.is_global and not address.is_multicast


@dataclass(frozen=True)
class FetchPolicy:
    """What a server-side fetch may reach and how much of it it may read."""

    allow_hosts: frozenset[str] = field(default_factory=frozenset)  # "host" or "host:port", lower case
    allow_private: bool = False
    max_bytes: int = 50 * 1024 * 1024
    timeout_s: float = 60.0
    max_redirects: int = 5

    @classmethod
    def from_settings(cls, settings: Settings, *, max_bytes: int | None = None) -> FetchPolicy:
        return cls(allow_hosts=frozenset(h.strip().lower() for h in settings.fetch_allow_hosts if h.strip()),
                   allow_private=settings.remote_fetch_allow_private,
                   max_bytes=max_bytes if max_bytes is not None else settings.fetch_max_bytes,
                   timeout_s=settings.fetch_timeout_s, max_redirects=settings.fetch_max_redirects)

    def host_exempt(self, host: str, port: int) -> bool:
        host = host.lower().strip("[]")
        return self.allow_private or host in self.allow_hosts or f"{host}:{port}" in self.allow_hosts

    async def address_for(self, host: str, port: int) -> str:
        """The address to connect to for `host`: every address it resolves to must be public."""
        if self.host_exempt(host, port):
            return host
        try:
            return _checked(ipaddress.ip_address(host.strip("[]").split("%")[0]), host)
        except ValueError:
            pass  # a name, not an address literal
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise InvalidInputError(f"the host {host!r} does not resolve", code="FETCH_FAILED") from exc
        addresses = [str(info[4][0]).split("%")[0] for info in infos]
        if not addresses:
            raise InvalidInputError(f"the host {host!r} does not resolve", code="FETCH_FAILED")
        for address in addresses:  # one private record is enough to refuse the name
            _checked(ipaddress.ip_address(address), host)
        return addresses[0]


def _checked(address: IPAddress, host: str) -> str:
    if not is_public(address):
        raise not_allowed(f"the host {host!r} is not a public address")
    return str(address)


def check_scheme(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise InvalidInputError(f"unsupported URL scheme {parts.scheme!r}", code="INVALID_URL")
    if not parts.hostname:
        raise InvalidInputError("the URL has no host", code="INVALID_URL")


async def fetch(url: str, policy: FetchPolicy) -> tuple[bytes, str]:
    """(bytes, content type) of `url`, every hop guarded, refused past `max_bytes` or `timeout_s`.

    Refusals and client errors are InvalidInputError (the request cannot succeed; an HTTP error
    answer carries its status as `details["upstream_status"]`); a host that does not answer is
    ServiceUnavailableError (it may answer later)."""
    from libs.fetch_client import fetch_guarded

    return await fetch_guarded(url, policy)


async def probe(url: str, policy: FetchPolicy, timeout_s: float) -> None:
    """Follow `url` to its end without reading the body: URL_NOT_ALLOWED when a hop is refused.

    Anything else (no answer, an HTTP error) is left to the fetch that will use the URL: a
    customer's host being slow for a moment is not a reason to refuse the request."""
    from libs.fetch_client import probe_guarded

    await probe_guarded(url, policy, timeout_s)


async def check_customer_urls(urls: Iterable[str], policy: FetchPolicy, is_ours: Callable[[str], bool],
                              timeout_s: float) -> None:
    """Refuse a request whose asset URLs lead inside our network, before anything is charged.

    Our own store's URLs are read by the store, never fetched; a value without a scheme is a
    store key. Every other URL must be http(s) and is followed hop by hop (at once, together)."""
    remote: list[str] = []
    for url in urls:
        if not url or is_ours(url):
            continue
        if "://" not in url:
            continue
        remote.append(url)
    results = await asyncio.gather(*(probe(url, policy, timeout_s) for url in dict.fromkeys(remote)),
                                   return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
