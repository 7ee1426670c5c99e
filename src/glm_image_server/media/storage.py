"""Where output files live: a local directory, served by the API at /files/{key}."""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

KEY = re.compile(r"^[A-Za-z0-9_-]+\.[a-z]+$")
UPLOAD_PREFIX = "upload-"


def file_url(public_url: str | None, request_base_url: str, key: str) -> str:
    """The URL a client fetches a stored file at: under the configured public URL (behind a reverse
    proxy), else under the URL the request came in on."""
    return f"{(public_url or request_base_url).rstrip('/')}/files/{key}"


def upload_key(image_uuid: uuid.UUID) -> str:
    """Where an uploaded image (PNG) is kept; its UUID is the public handle."""
    return f"{UPLOAD_PREFIX}{image_uuid}.png"


class LocalStorage:
    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path | None:
        """The file for a key, or None for a key that is malformed or absent."""
        if not KEY.match(key):
            return None
        path = self.root / key
        return path if path.is_file() else None

    def save(self, key: str, data: bytes) -> None:
        """Atomic: a reader sees the whole file or none (a re-run job overwrites its own keys)."""
        if not KEY.match(key):
            raise ValueError(f"bad storage key {key!r}")
        partial = self.root / f".{key}.partial"
        partial.write_bytes(data)
        os.replace(partial, self.root / key)

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def delete(self, key: str) -> None:
        if KEY.match(key):
            (self.root / key).unlink(missing_ok=True)

    def delete_uploads_before(self, when: float) -> None:
        for path in self.root.glob(f"{UPLOAD_PREFIX}*"):
            if path.stat().st_mtime < when:
                path.unlink(missing_ok=True)
