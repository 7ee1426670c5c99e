"""Where output files and uploads live: a local directory, served by the API at /files/{key} (one box), or
an S3 bucket whose objects clients fetch through presigned URLs (a fleet: media/s3.py). Both keep the same
flat keys, so jobs and locators (`stored:<key>`) do not care which one holds them."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlsplit

KEY = re.compile(r"^[A-Za-z0-9_-]+\.[a-z]+$")
UPLOAD_PREFIX = "upload-"
PRESIGN_MAX_S = 7 * 24 * 3600  # the longest a SigV4 presigned URL may live


def origin(url: str) -> tuple[str, int, str] | None:
    """(host, port, path) of an http(s) URL, the port filled in from the scheme; None for anything else.
    Two URLs with equal host and port reach the same listener, whichever scheme they name."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        return None
    return parts.hostname.lower(), port, parts.path


def upload_key(image_uuid: uuid.UUID) -> str:
    """Where an uploaded image (PNG) is kept; its UUID is the public handle."""
    return f"{UPLOAD_PREFIX}{image_uuid}.png"


def upload_part_key(image_uuid: uuid.UUID, part_number: int) -> str:
    """Where one part of a multipart upload waits for the rest (gone once assembled, or with old uploads)."""
    return f"{UPLOAD_PREFIX}{image_uuid}-{part_number}.part"


def check_key(key: str) -> None:
    if not KEY.match(key):
        raise ValueError(f"bad storage key {key!r}")


class Storage(Protocol):
    def save(self, key: str, data: bytes) -> None:
        """Atomic: a reader sees the whole object or none (a re-run job overwrites its own keys)."""

    def read(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool:
        """False for a key that is malformed or absent."""

    def delete(self, key: str) -> None: ...

    def delete_uploads_before(self, when: float) -> None: ...

    def delete_partials_before(self, when: float) -> int:
        """Half-written objects a crash left (none where writes are atomic); returns how many went."""

    def url(self, key: str, base_url: str, expires_s: float) -> str:
        """A download URL valid at least `expires_s` (capped at 7 days); locally under `base_url`."""

    def key_of(self, url: str, base_urls: Sequence[str]) -> str | None:
        """The inverse of `url` (locally under one of `base_urls`), unchecked; None for other URLs."""


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

    def exists(self, key: str) -> bool:
        return self.path(key) is not None

    def save(self, key: str, data: bytes) -> None:
        check_key(key)
        partial = self.root / f".{key}.partial"
        try:
            partial.write_bytes(data)
            os.replace(partial, self.root / key)
        except OSError:
            partial.unlink(missing_ok=True)  # a full disk must not leave half files behind
            raise

    def read(self, key: str) -> bytes:
        return (self.root / key).read_bytes()

    def delete(self, key: str) -> None:
        if KEY.match(key):
            (self.root / key).unlink(missing_ok=True)

    def delete_partials_before(self, when: float) -> int:
        gone = 0
        for path in self.root.glob(".*.partial"):
            with contextlib.suppress(FileNotFoundError):  # gone meanwhile
                if path.stat().st_mtime < when:
                    path.unlink(missing_ok=True)
                    gone += 1
        return gone

    def delete_uploads_before(self, when: float) -> None:
        for path in self.root.glob(f"{UPLOAD_PREFIX}*"):
            if path.stat().st_mtime < when:
                path.unlink(missing_ok=True)

    def url(self, key: str, base_url: str, expires_s: float) -> str:
        return f"{base_url.rstrip('/')}/files/{key}"

    def key_of(self, url: str, base_urls: Sequence[str]) -> str | None:
        target = origin(url)
        for own in filter(None, map(origin, base_urls)):
            files = own[2].rstrip("/") + "/files/"
            if target and own[:2] == target[:2] and target[2].startswith(files):
                return unquote(target[2].removeprefix(files))
        return None


class DiskSpace:
    """Free space where the data lives, read at most once a second."""

    def __init__(self, path: Path, min_free_mb: float) -> None:
        self.path, self.min_free = path, min_free_mb * 1024 * 1024
        self._checked_at, self._free = 0.0, float("inf")

    def problem(self) -> str | None:
        """Why the disk cannot take more work, or None."""
        now = time.monotonic()
        if now - self._checked_at > 1.0:
            try:
                self._free = shutil.disk_usage(self.path).free
            except OSError:
                self._free = float("inf")  # unknown: do not refuse work over it
            self._checked_at = now
        if self._free >= self.min_free:
            return None
        return (
            f"low disk space: {self._free / 2**20:.0f} MB free in {self.path}, "
            f"{self.min_free / 2**20:.0f} MB needed to take new work"
        )


def open_storage(storage_url: str | None, files_dir: Path) -> Storage:
    """The S3 bucket at `storage_url` when one is set (a fleet), else `files_dir` (the data directory's)."""
    if storage_url:
        from .s3 import S3Storage

        return S3Storage(storage_url)
    return LocalStorage(files_dir)
