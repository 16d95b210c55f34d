"""The fetch guard: public hosts only (every hop, the checked address), bounded size and time."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from libs.errors import InvalidInputError, ServiceUnavailableError
from libs.fetch import FetchPolicy, check_customer_urls, fetch, is_public
from libs.settings import Settings
from tests.wire import ImageServer


@pytest.fixture
def host() -> Iterator[ImageServer]:
    with ImageServer() as server:
        assert isinstance(server, ImageServer)
        yield server


@pytest.fixture
def inner() -> Iterator[ImageServer]:
    """A second loopback server: something inside our network a redirect points at."""
    with ImageServer() as server:
        assert isinstance(server, ImageServer)
        yield server


def allowing(*entries: str, **limits: float) -> FetchPolicy:
    return FetchPolicy(allow_hosts=frozenset(entries), **limits)  # type: ignore[arg-type]


async def refused(url: str, policy: FetchPolicy, code: str = "URL_NOT_ALLOWED") -> None:
    with pytest.raises(InvalidInputError) as caught:
        await fetch(url, policy)
    assert caught.value.instance_code == code, caught.value


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.7", "172.16.0.1", "192.168.1.1", "169.254.169.254",
                                     "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fc00::1", "fe80::1",
                                     "::ffff:127.0.0.1", "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe"])
def test_addresses_inside_any_network_are_not_public(address: str) -> None:
    """Loopback, private, link-local (cloud metadata), shared, multicast and IPv4 hidden in IPv6."""
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "104.16.0.1", "2606:4700::1", "64:ff9b::808:808"])
def test_public_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


async def test_loopback_and_metadata_are_refused_without_a_connection(host: ImageServer) -> None:
    """The check comes before the connect: the server never sees the request."""
    for url in (f"{host.url}/img/a.png", f"http://localhost:{host.url.rsplit(':', 1)[1]}/img/a.png",
                "http://169.254.169.254/latest/meta-data/", "http://[::1]:9/x.png", "http://10.0.0.7/x.png"):
        await refused(url, FetchPolicy())
    assert host.count("image") == 0


async def test_an_allowed_host_is_fetched(host: ImageServer) -> None:
    data, content_type = await fetch(f"{host.url}/img/a.png", allowing(host.host_port))
    assert data.startswith(b"\x89PNG") and content_type == "image/png"


async def test_an_http_error_answer_carries_its_status(host: ImageServer) -> None:
    """A 404 or 503 from the host is FETCH_FAILED with the host's status (a download proxy mirrors it)."""
    for status in (404, 503):
        host.fail("image", status)
        with pytest.raises(InvalidInputError) as caught:
            await fetch(f"{host.url}/img/gone.png", allowing(host.host_port))
        assert (caught.value.instance_code, caught.value.details["upstream_status"]) == ("FETCH_FAILED", status)


async def test_every_redirect_hop_is_checked(host: ImageServer, inner: ImageServer) -> None:
    """An allowed (public-looking) host that redirects inside: refused at that hop, nothing fetched there."""
    policy = allowing(host.host_port)
    await refused(host.redirect_to(f"{inner.url}/img/secret.png"), policy)
    await refused(host.redirect_to("http://169.254.169.254/latest/meta-data/"), policy)
    assert inner.count("image") == 0 and host.count("redirect") == 2
    data, _ = await fetch(host.redirect_to(f"{host.url}/img/b.png"), policy)
    assert data.startswith(b"\x89PNG")
    await refused(host.redirect_to("file:///etc/passwd"), policy, "INVALID_URL")
    await refused(f"{host.url}/loop", policy, "FETCH_FAILED")  # too many redirects


async def test_only_http_urls_are_fetched() -> None:
    for url in ("file:///etc/passwd", "ftp://example.com/x.png", "gopher://127.0.0.1:4222/", "http:///x"):
        await refused(url, FetchPolicy(), "INVALID_URL")


async def test_size_and_time_are_bounded(host: ImageServer) -> None:
    await refused(f"{host.url}/big", allowing(host.host_port, max_bytes=1024), "FILE_TOO_LARGE")
    host.hang("image", 1, seconds=5)
    with pytest.raises(ServiceUnavailableError):
        await fetch(f"{host.url}/img/slow.png", allowing(host.host_port, timeout_s=0.5))


async def test_settings_build_the_policy() -> None:
    settings = Settings(_env_file=None, fetch_allow_hosts=["127.0.0.1:9"], fetch_max_bytes=10,  # type: ignore[call-arg]
                        fetch_timeout_s=2.0)
    policy = FetchPolicy.from_settings(settings)
    assert policy.host_exempt("127.0.0.1", 9) and not policy.host_exempt("127.0.0.1", 10)
    assert (policy.max_bytes, policy.timeout_s, policy.allow_private) == (10, 2.0, False)
    assert FetchPolicy.from_settings(Settings(_env_file=None)).allow_hosts == frozenset()  # type: ignore[call-arg]


async def test_a_request_check_skips_our_own_store_and_keys(host: ImageServer) -> None:
    """Our store's URLs and bare keys are read by the store; every other URL is followed."""
    base = f"{host.url}/assets"
    await check_customer_urls([f"{base}/uploads/a.png", "uploads/b.png"], FetchPolicy(),
                              lambda url: url.startswith(base + "/"), timeout_s=2.0)
    with pytest.raises(InvalidInputError) as caught:
        await check_customer_urls([f"{base}/uploads/a.png", f"{host.url}/img/x.png"], FetchPolicy(),
                                  lambda url: url.startswith(base + "/"), timeout_s=2.0)
    assert caught.value.instance_code == "URL_NOT_ALLOWED"
    assert host.count("image") == 0
