"""Fetch untrusted URLs (image inputs) with limits, and refuse ones that point inside our network.

The guard resolves the host and refuses loopback, private, link-local and other non-global addresses
unless the settings allow them; it checks every redirect hop again. It checks the addresses the name
resolves to just before connecting, which leaves a DNS-rebinding window: run the server where its
network reach is limited anyway if that matters to you.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import socket
import time
from urllib.parse import unquote_to_bytes, urljoin

import httpx
from PIL import Image

from ..settings import Settings
from ..types import InvalidRequest
from .inputs import decode_image

USER_AGENT = "glm-image-server"


class BlockedUrl(ValueError):
    pass


class UrlGuard:
    def __init__(self, allow_loopback: bool = False, allow_private: bool = False) -> None:
        self.allow_loopback, self.allow_private = allow_loopback, allow_private

    def check(self, url: str) -> None:
        """Raise BlockedUrl unless `url` is http(s) and every address its host resolves to is allowed."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise BlockedUrl(f"{url!r} is not a valid URL") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise BlockedUrl(f"{url!r} is not an http(s) URL")
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            infos = socket.getaddrinfo(parsed.host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise BlockedUrl(f"the host {parsed.host!r} could not be resolved") from exc
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            if address.is_loopback:
                if not self.allow_loopback:
                    raise BlockedUrl(f"{parsed.host} resolves to the loopback address {address}")
            elif not address.is_global and not self.allow_private:
                raise BlockedUrl(f"{parsed.host} resolves to the non-public address {address}")


def decode_data_uri(uri: str, field: str, max_bytes: int) -> bytes:
    header, comma, payload = uri[len("data:") :].partition(",")
    if not comma:
        raise InvalidRequest(field, "is a malformed data URI (no comma)", "data:<type>;base64,<data>")
    if header.endswith(";base64"):
        if len(payload) * 3 // 4 > max_bytes:
            raise InvalidRequest(field, "data URI is too large", f"at most {max_bytes} bytes")
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidRequest(field, "data URI holds invalid base64", "data:<type>;base64,<data>") from exc
    data = unquote_to_bytes(payload)
    if len(data) > max_bytes:
        raise InvalidRequest(field, "data URI is too large", f"at most {max_bytes} bytes")
    return data


class ImageFetcher:
    """URL or data URI -> decoded RGB image, within the configured byte, pixel and time limits."""

    def __init__(self, settings: Settings) -> None:
        self.guard = UrlGuard(settings.allow_loopback_urls, settings.allow_private_urls)
        self.timeout = settings.fetch_timeout_s
        self.max_bytes = settings.fetch_max_bytes
        self.max_redirects = settings.fetch_max_redirects
        self.max_pixels = settings.input_max_pixels
        self.client = httpx.Client(
            timeout=self.timeout, follow_redirects=False, headers={"user-agent": USER_AGENT}
        )

    def close(self) -> None:
        self.client.close()

    def fetch(self, url: str, field: str) -> Image.Image:
        return decode_image(self.fetch_bytes(url, field), field, max_pixels=self.max_pixels)

    def fetch_bytes(self, url: str, field: str) -> bytes:
        if url.startswith("data:"):
            return decode_data_uri(url, field, self.max_bytes)
        deadline = time.monotonic() + self.timeout
        for _ in range(self.max_redirects + 1):
            try:
                self.guard.check(url)
            except BlockedUrl as exc:
                raise InvalidRequest(field, f"refused: {exc}", "public http(s) URLs or data URIs") from exc
            try:
                with self.client.stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise InvalidRequest(
                            field, f"{url} answered HTTP {response.status_code}", "a URL that serves an image"
                        )
                    return self._read(response, url, field, deadline)
            except httpx.TimeoutException as exc:
                raise InvalidRequest(field, f"timed out fetching {url}", f"{self.timeout:g} s") from exc
            except httpx.HTTPError as exc:
                raise InvalidRequest(field, f"could not fetch {url}: {exc}", "a reachable URL") from exc
        raise InvalidRequest(field, f"more than {self.max_redirects} redirects", "a URL that serves an image")

    def _read(self, response: httpx.Response, url: str, field: str, deadline: float) -> bytes:
        too_big = InvalidRequest(field, f"{url} is larger than {self.max_bytes} bytes", "smaller images")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise too_big
        chunks, size = [], 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise too_big
            if time.monotonic() > deadline:
                raise InvalidRequest(field, f"timed out fetching {url}", f"{self.timeout:g} s")
            chunks.append(chunk)
        return b"".join(chunks)
