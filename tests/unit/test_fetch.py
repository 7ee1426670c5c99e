"""Input fetching limits and the URL guard, directly."""

from __future__ import annotations

import asyncio
import time

import pytest
from helpers.images import data_uri, png_bytes
from helpers.serving import dripping

from glm_image_server.config import Settings
from glm_image_server.core.request import InvalidRequest
from glm_image_server.media.fetch import BlockedUrl, ImageFetcher, UrlGuard
from glm_image_server.slices import FetchSettings


class fetcher:
    """An ImageFetcher driven synchronously, for tests."""

    def __init__(self, **overrides) -> None:
        self.inner = ImageFetcher(
            FetchSettings.from_settings(Settings(allow_loopback_urls=True, **overrides))
        )

    def fetch_bytes(self, url: str, field: str) -> bytes:
        return asyncio.run(self.inner.fetch_bytes(url, field))

    def fetch(self, url: str, field: str):
        return asyncio.run(self.inner.fetch(url, field))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost/x",
        "http://[::1]/x",
        "http://10.1.2.3/x",
        "http://172.16.0.1/x",
        "http://192.168.0.1/x",
        "http://169.254.169.254/x",
        "http://[fe80::1]/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://0.0.0.0/x",
        "file:///etc/passwd",
        "gopher://example.com/",
    ],
)
def test_guard_refuses_internal_targets(url: str) -> None:
    with pytest.raises(BlockedUrl):
        UrlGuard().check(url)


def test_the_unspecified_address_is_refused_even_where_private_ones_are_allowed() -> None:
    for url in ("http://0.0.0.0:8000/x", "http://[::]:8000/x"):
        with pytest.raises(BlockedUrl, match="unspecified"):
            UrlGuard(allow_loopback=True, allow_private=True).check(url)


def test_guard_allowances() -> None:
    UrlGuard(allow_loopback=True).check("http://127.0.0.1:8000/x")
    with pytest.raises(BlockedUrl, match="non-public"):
        UrlGuard(allow_loopback=True).check("http://10.0.0.1/x")
    UrlGuard(allow_private=True).check("http://10.0.0.1/x")
    UrlGuard().check("http://93.184.215.14/x")  # a public address passes (nothing is fetched here)


def test_redirect_hops_are_checked_again(web) -> None:
    web.routes["/hop"] = (302, b"", {"location": "http://10.0.0.1/secret.png"})
    with pytest.raises(InvalidRequest, match=r"refused: .*non-public"):
        fetcher().fetch_bytes(web.url("/hop"), "image")
    assert [path for _m, path, _b in web.received] == ["/hop"]


def test_redirects_are_followed_and_bounded(web) -> None:
    web.routes["/a"] = (301, b"", {"location": "/b"})
    web.routes["/b"] = (200, png_bytes((30, 20)), {})
    assert fetcher().fetch(web.url("/a"), "image").size == (30, 20)
    web.routes["/loop"] = (302, b"", {"location": "/loop"})
    with pytest.raises(InvalidRequest, match="more than 2 redirects"):
        fetcher(fetch_max_redirects=2).fetch_bytes(web.url("/loop"), "image")


def test_byte_limit(web) -> None:
    web.routes["/big"] = (200, b"x" * 5000, {})
    with pytest.raises(InvalidRequest, match="larger than 1000 bytes"):
        fetcher(fetch_max_bytes=1000).fetch_bytes(web.url("/big"), "image")
    with pytest.raises(InvalidRequest, match="too large"):
        fetcher(fetch_max_bytes=1000).fetch_bytes(data_uri(b"y" * 5000), "image")


def test_slow_server_times_out(web) -> None:
    def slow(handler):
        time.sleep(3)
        return 200, png_bytes(), {}

    web.routes["/slow"] = slow
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match="timed out"):
        fetcher(fetch_timeout_s=0.5).fetch_bytes(web.url("/slow"), "image")
    assert time.monotonic() - started < 2.5


def test_a_dripping_server_is_cut_off_at_the_whole_fetch_deadline(web) -> None:
    """One header byte every 0.2 s never trips a per-read timeout; the deadline covers the whole fetch."""
    web.routes["/drip"] = dripping(0.2, total_s=5)
    started = time.monotonic()
    with pytest.raises(InvalidRequest, match="timed out"):
        fetcher(fetch_timeout_s=1).fetch_bytes(web.url("/drip"), "image")
    assert time.monotonic() - started < 2


def test_pixel_limit_and_sniffing(web) -> None:
    web.routes["/lies.jpg"] = (200, png_bytes((40, 30)), {"content-type": "text/plain"})
    assert fetcher().fetch(web.url("/lies.jpg"), "image").size == (40, 30)  # bytes decide, not headers
    with pytest.raises(InvalidRequest, match="at most 1000 pixels"):
        fetcher(input_max_pixels=1000).fetch(web.url("/lies.jpg"), "image")
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"
    with pytest.raises(InvalidRequest, match="not a readable image"):
        fetcher().fetch(data_uri(eps, "application/postscript"), "image")
