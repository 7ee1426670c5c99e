"""Uploaded reference images (Runware imageUpload, OpenAI edits, fal's storage flow): decoded once to
validate them, kept as PNG in storage under their UUID, and referenced by jobs as `stored:<key>`. A
multipart upload's parts wait in storage until they are assembled."""

from __future__ import annotations

import hashlib
import uuid

from PIL import Image

from ..core.request import STORED, InvalidRequest
from .encode import encode_image
from .inputs import decode_image
from .storage import Storage, upload_key, upload_part_key


def keep_upload_bytes(
    storage: Storage, data: bytes, field: str, max_pixels: int, image_uuid: uuid.UUID | None = None
) -> tuple[Image.Image, str]:
    """Validate and keep uploaded bytes under `image_uuid` (default a new one): (image, `stored:` locator)."""
    image = decode_image(data, field, max_pixels)
    key = upload_key(image_uuid or uuid.uuid4())
    storage.save(key, encode_image(image, "png"))
    return image, STORED + key


def upload_locator(storage: Storage, image_uuid: uuid.UUID) -> str | None:
    """`stored:<key>` for a known upload, None when it does not exist (never uploaded, or expired)."""
    key = upload_key(image_uuid)
    return STORED + key if storage.exists(key) else None


class UploadTooLarge(InvalidRequest):
    """The parts of an upload add up to more than an input may be."""


def part_etag(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


def keep_part(storage: Storage, image_uuid: uuid.UUID, part_number: int, data: bytes) -> str:
    """Store one part of a multipart upload; returns its ETag (its digest), to be named at completion."""
    storage.save(upload_part_key(image_uuid, part_number), data)
    return part_etag(data)


def assemble_parts(
    storage: Storage, image_uuid: uuid.UUID, parts: list[tuple[int, str]], max_bytes: int
) -> bytes:
    """The upload's bytes from its stored `parts` ((number, etag), ascending); InvalidRequest when a part
    is missing or differs from its ETag, or when the whole is over `max_bytes`. The parts are deleted."""
    chunks, size = [], 0
    for number, etag in parts:
        key = upload_part_key(image_uuid, number)
        if not storage.exists(key):
            raise InvalidRequest("parts", f"part {number} was never uploaded", "the parts that were PUT")
        data = storage.read(key)
        if part_etag(data) != etag:
            raise InvalidRequest("parts", f"part {number} has another ETag", "the ETag its PUT answered")
        size += len(data)
        if size > max_bytes:
            raise UploadTooLarge("parts", f"add up to more than {max_bytes} bytes")
        chunks.append(data)
    for number, _etag in parts:
        storage.delete(upload_part_key(image_uuid, number))
    return b"".join(chunks)
