"""Input URLs naming this server's own files (a result or upload given back as a reference) become
`stored:<key>` locators read straight from storage, so neither the URL guard (which rightly refuses our own
loopback or private address) nor TLS verification stands in the way; the decode limits still apply.
Own: `/files/<key>` under the public URL, the request's base URL or the bound host and port (any scheme); a
relative `/files/<key>`; or the storage's own object URLs (S3: our bucket and prefix, signed or not). A key
must be a plain storage key: `/files/../x` names nothing."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

from ..core.request import STORED, InvalidRequest
from .storage import KEY, Storage

FILES = "/files/"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


class OwnFiles:
    """Recognises our own file URLs among a request's references (blocking: call it off the event loop)."""

    def __init__(self, storage: Storage, public_url: str | None, host: str, port: int) -> None:
        self.storage, self.public_url = storage, public_url
        try:
            address = ipaddress.ip_address(host)
            local = address.is_loopback or address.is_unspecified
        except ValueError:
            local = host == "localhost"
        # The bound address, and the loopback names too when it listens on loopback or on every address.
        names = [f"[{host}]" if ":" in host else host, *(LOOPBACK_NAMES if local else ())]
        self.bound = [f"http://{name}:{port}" for name in dict.fromkeys(names)]

    def key_of(self, ref: str, base_url: str) -> str | None:
        """The storage key `ref` names when it is one of our files (unchecked), None for anyone else's."""
        if ref.startswith(("http://", "https://")):
            bases = [*filter(None, [self.public_url, base_url]), *self.bound]
            return self.storage.key_of(ref, bases)
        path = urlsplit(ref).path if ref.startswith("/") else ""
        under_public = urlsplit(self.public_url or "").path.rstrip("/") + FILES
        prefix = next((p for p in (FILES, under_public) if path.startswith(p)), None)
        return None if prefix is None else unquote(path.removeprefix(prefix))

    def locator(self, ref: str, field: str, base_url: str) -> str:
        """`stored:<key>` for one of our files, `ref` itself for anything else; InvalidRequest for a relative
        path that names no file, a malformed key, or a file that is gone (expired)."""
        key = self.key_of(ref, base_url)
        if key is None:
            if ref.startswith("/"):
                raise InvalidRequest(field, f"{ref[:80]!r} is not a file of this server", "/files/<key>")
            return ref
        if not KEY.match(key):
            raise InvalidRequest(field, f"{ref[:80]!r} names no file of this server", "/files/<key>")
        if not self.storage.exists(key):
            raise InvalidRequest(
                field, f"{ref[:80]} has expired or does not exist", "a result or upload still kept"
            )
        return STORED + key

    def locators(self, refs: Sequence[str], base_url: str, field: str = "references") -> tuple[str, ...]:
        """`locator` for each of a request's references, reported as `field[i]`."""
        return tuple(self.locator(ref, f"{field}[{i}]", base_url) for i, ref in enumerate(refs))
