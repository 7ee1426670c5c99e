"""Encode generated images for clients."""

from __future__ import annotations

import io

from PIL import Image

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}


def encode_image(image: Image.Image, fmt: str, quality: int = 95) -> bytes:
    """`fmt` is jpeg, png or webp; quality applies to the lossy ones."""
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG")
    else:
        image.save(buffer, format=fmt.upper(), quality=quality)
    return buffer.getvalue()
