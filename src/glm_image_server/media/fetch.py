"""Fetch untrusted URLs (image inputs) with limits, and refuse ones that point inside our network: the
guard resolves the host and refuses loopback, private, link-local and other non-global addresses unless
the settings allow them, at every redirect hop. It checks the addresses just before connecting, which
leaves a DNS-rebinding window: run the server where its network reach is limited if that matters to you."""

from __future__ import annotations

import asyncio
import base64
import binascii
import ipaddress
import socket
from urllib.parse import unquote_to_bytes, urljoin

import httpx
from PIL import Image

from ..core.request import InvalidRequest
from ..slices import FetchSettings
from ..tls import SelfSigned, trusting_context
from .inputs import decode_image

USER_AGENT = "glm-image-server"


class BlockedUrl(ValueError):
    pass


class UrlGuard:
    def __init__(self, allow_loopback: bool = False, allow_private: bool = False) -> None:
        self.allow_loopback, self.allow_private = allow_loopback, allow_private

    def check(self, url: str) -> None:
        """Raise BlockedUrl unless `url` is http(s) and every address its host resolves to is allowed."""
        asyncio.run(self.acheck(url))

    async def acheck(self, url: str) -> None:
        """`check` without blocking the event loop."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as exc:
            raise BlockedUrl(f"{url!r} is not a valid URL") from exc
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise BlockedUrl(f"{url!r} is not an http(s) URL")
        host, port = parsed.host, parsed.port or (443 if parsed.scheme == "https" else 80)
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            raise BlockedUrl(f"the host {host!r} could not be resolved") from exc
        for info in infos:
            address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
                address = address.ipv4_mapped
            if address.is_unspecified:  # 0.0.0.0 and :: reach this machine: never allowed
                raise BlockedUrl(f"{host} resolves to the unspecified address {address}")
            if address.is_loopback:
                if not self.allow_loopback:
                    raise BlockedUrl(f"{host} resolves to the loopback address {address}")
            elif not address.is_global and not self.allow_private:
                raise BlockedUrl(f"{host} resolves to the non-public address {address}")


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
    """URL or data URI -> bytes or a decoded RGB image, within the byte, pixel and time limits. The time
    limit is one deadline for the whole fetch (lookup, connect, headers, body, redirects), so a server that
    drips one byte at a time cannot hold it longer; async, so a slow URL holds no thread."""

    def __init__(self, settings: FetchSettings) -> None:
        self.guard = UrlGuard(settings.allow_loopback_urls, settings.allow_private_urls)
        self.timeout = settings.fetch_timeout_s
        self.max_bytes = settings.fetch_max_bytes
        self.max_redirects = settings.fetch_max_redirects
        self.max_pixels = settings.input_max_pixels
        # Behind `--tls self-signed` the server trusts its own CA (a URL of ours it did not recognise).
        self.verify = trusting_context(SelfSigned(settings.tls_dir).ca if settings.tls else None)

    async def fetch(self, url: str, field: str) -> Image.Image:
        data = await self.fetch_bytes(url, field)
        return await asyncio.to_thread(decode_image, data, field, max_pixels=self.max_pixels)

    async def fetch_bytes(self, url: str, field: str) -> bytes:
        if url.startswith("data:"):
            return decode_data_uri(url, field, self.max_bytes)
        client = httpx.AsyncClient(
            follow_redirects=False, headers={"user-agent": USER_AGENT}, timeout=None, verify=self.verify
        )
        try:
            async with asyncio.timeout(self.timeout), client:
                return await self._follow(client, url, field)
        except TimeoutError:
            raise InvalidRequest(field, f"timed out fetching {url}", f"within {self.timeout:g} s") from None

    async def _follow(self, client: httpx.AsyncClient, url: str, field: str) -> bytes:
        for _ in range(self.max_redirects + 1):
            try:
                await self.guard.acheck(url)
            except BlockedUrl as exc:
                raise InvalidRequest(field, f"refused: {exc}", "public http(s) URLs or data URIs") from exc
            try:
                async with client.stream("GET", url) as response:
                    if response.is_redirect and "location" in response.headers:
                        url = urljoin(url, response.headers["location"])
                        continue
                    if response.status_code != 200:
                        raise InvalidRequest(
                            field, f"{url} answered HTTP {response.status_code}", "a URL that serves an image"
                        )
                    return await self._read(response, url, field)
            except httpx.HTTPError as exc:
                raise InvalidRequest(field, f"could not fetch {url}: {exc}", "a reachable URL") from exc
        raise InvalidRequest(field, f"more than {self.max_redirects} redirects", "a URL that serves an image")

    async def _read(self, response: httpx.Response, url: str, field: str) -> bytes:
        too_big = InvalidRequest(field, f"{url} is larger than {self.max_bytes} bytes", "smaller images")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise too_big
        chunks, size = [], 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)
