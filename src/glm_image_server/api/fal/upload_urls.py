"""Signed upload URLs for fal's storage flow: the client PUTs its bytes to the `upload_url` it was given
without sending its key (fal's clients never do), so the URL itself is the credential — it names the
upload, whose key asked for it and until when it is good, signed with an HMAC whose secret is the asking
API key itself (any API replica can check it; a removed key's URLs stop working at once), or with no
keys configured a random secret kept in the data directory."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ...keys import parse_keys
from ...signing import create_once

UPLOADS_PATH = "/fal/storage/uploads/"
UPLOAD_URL_TTL_S = 3600.0
SECRET_NAME = "upload-url.secret"
NO_OWNER = "-"


@dataclass(frozen=True)
class UploadGrant:
    """What an upload URL allows: writing the upload `image_uuid` (in parts when `multipart`) until
    `expires_at`, on behalf of `owner` (the key's hash; None without keys)."""

    image_uuid: uuid.UUID
    owner: str | None
    multipart: bool
    expires_at: float


class UploadSigner:
    def __init__(self, keys: list[str], data_dir: Path) -> None:
        self._secrets: dict[str | None, bytes] = {k.owner: k.secret.encode() for k in parse_keys(keys)}
        if not keys:
            # made on first use, readable by this user only, never read half-written (create_once)
            create_once(data_dir / SECRET_NAME, secrets.token_bytes(32))
            self._secrets[None] = (data_dir / SECRET_NAME).read_bytes()

    def _mac(self, owner: str | None, payload: str) -> str | None:
        secret = self._secrets.get(owner)
        if secret is None:
            return None
        digest = hmac.new(secret, b"fal-upload-url:" + payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(
        self, owner: str | None, multipart: bool, ttl_s: float = UPLOAD_URL_TTL_S
    ) -> tuple[str, UploadGrant]:
        """A new upload's token (a URL path segment) and what it grants."""
        grant = UploadGrant(uuid.uuid4(), owner, multipart, float(int(time.time() + ttl_s)))
        payload = ".".join(
            (grant.image_uuid.hex, str(int(grant.expires_at)), "m" if multipart else "s", owner or NO_OWNER)
        )
        mac = self._mac(owner, payload)
        assert mac is not None, "signing for a key that is not configured"
        return f"{payload}.{mac}", grant

    def verify(self, token: str) -> UploadGrant | None:
        """The grant of a token this server signed and that has not expired; None for anything else."""
        parts = token.split(".")
        if len(parts) != 5:
            return None
        hex_uuid, expires, kind, owner_text, mac = parts
        owner = None if owner_text == NO_OWNER else owner_text
        expected = self._mac(owner, ".".join(parts[:4]))
        if expected is None or not hmac.compare_digest(expected, mac):
            return None
        if not expires.isdigit() or int(expires) < time.time() or kind not in ("m", "s"):
            return None
        try:
            image_uuid = uuid.UUID(hex=hex_uuid)
        except ValueError:
            return None
        return UploadGrant(image_uuid, owner, kind == "m", float(expires))
