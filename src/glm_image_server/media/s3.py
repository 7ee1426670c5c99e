"""Output files and uploads in an S3(-compatible) bucket, for a fleet whose API replicas and workers share
no disk: `GLM_IMAGE_STORAGE_URL=s3://bucket/prefix`. Credentials, region and endpoint come from the standard
AWS variables through boto3; clients download through presigned GET URLs that expire with the job."""

from __future__ import annotations

import mimetypes
from collections.abc import Sequence
from functools import cached_property
from urllib.parse import unquote, urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from .storage import KEY, PRESIGN_MAX_S, UPLOAD_PREFIX, check_key, origin

PROBE_KEY = "glm-image-probe.png"  # signs nothing: only shows where this storage's objects are addressed


def parse_s3_url(url: str) -> tuple[str, str]:
    """s3://bucket/some/prefix -> ("bucket", "some/prefix/"); the prefix may be empty."""
    parsed = urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ValueError(f"storage URL {url!r} is not s3://bucket[/prefix]")
    prefix = parsed.path.strip("/")
    return parsed.netloc, f"{prefix}/" if prefix else ""


class S3Storage:
    def __init__(self, url: str, client=None) -> None:
        self.bucket, self.prefix = parse_s3_url(url)
        config = Config(signature_version="s3v4", retries={"max_attempts": 5, "mode": "standard"})
        self.client = client or boto3.client("s3", config=config)

    def _key(self, key: str) -> str:
        return self.prefix + key

    def save(self, key: str, data: bytes) -> None:
        check_key(key)  # one PUT: S3 shows the whole object or none
        kind = mimetypes.guess_type(key)[0] or "application/octet-stream"
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ContentType=kind)

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()

    def exists(self, key: str) -> bool:
        if not KEY.match(key):
            return False
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        if KEY.match(key):
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def delete_uploads_before(self, when: float) -> None:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + UPLOAD_PREFIX
        )
        for page in pages:
            contents = page.get("Contents", ())
            old = [{"Key": item["Key"]} for item in contents if item["LastModified"].timestamp() < when]
            if old:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": old, "Quiet": True})

    def delete_partials_before(self, when: float) -> int:
        return 0  # a PUT is atomic: no half-written objects

    def url(self, key: str, base_url: str, expires_s: float) -> str:
        expires = int(min(max(expires_s, 1), PRESIGN_MAX_S))
        return self.client.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=expires
        )

    @cached_property
    def _objects_at(self) -> tuple[str, int, str]:
        """(host, port, path before a key) of our object URLs as the client addresses them (virtual-hosted
        or path-style): a presigned URL made locally, then cut."""
        probe = origin(self.url(PROBE_KEY, "", 60))
        assert probe is not None, "boto3 made a presigned URL that is not http(s)"
        host, port, path = probe
        return host, port, unquote(path).removesuffix(PROBE_KEY)

    def key_of(self, url: str, base_urls: Sequence[str] = ()) -> str | None:
        """The key of one of our bucket's (prefix's) object URLs, whatever its query (signature, expiry):
        read with our own credentials, it needs neither."""
        target = origin(url)
        host, port, path = self._objects_at
        if target is None or target[:2] != (host, port):
            return None
        full = unquote(target[2])
        return full.removeprefix(path) if full.startswith(path) else None
