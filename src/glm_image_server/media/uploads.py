"""Uploaded reference images (Runware imageUpload, OpenAI edits): decoded once to validate them, kept as
PNG in storage under their UUID, and referenced by jobs as `stored:<key>`."""

from __future__ import annotations

import uuid

from PIL import Image

from ..types import STORED
from .encode import encode_image
from .inputs import decode_image
from .storage import Storage, upload_key


def keep_upload(storage: Storage, image: Image.Image) -> uuid.UUID:
    """Store a decoded image; its UUID is the client's handle."""
    image_uuid = uuid.uuid4()
    storage.save(upload_key(image_uuid), encode_image(image, "png"))
    return image_uuid


def keep_upload_bytes(storage: Storage, data: bytes, field: str, max_pixels: int) -> tuple[Image.Image, str]:
    """Validate and store uploaded bytes; returns the image and its `stored:` locator."""
    image = decode_image(data, field, max_pixels)
    return image, STORED + upload_key(keep_upload(storage, image))


def upload_locator(storage: Storage, image_uuid: uuid.UUID) -> str | None:
    """`stored:<key>` for a known upload, None when it does not exist (never uploaded, or expired)."""
    key = upload_key(image_uuid)
    return STORED + key if storage.exists(key) else None
