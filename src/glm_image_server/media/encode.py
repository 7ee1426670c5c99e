"""Encode generated images for clients, with settings chosen by bench/encoding.py (1024², docs/benchmarks.md):
WEBP with libwebp's fastest method (0) is ~3x faster than Pillow's default (4) and no bigger at quality 95;
PNG at zlib level 1 is faster than the default 6 for ~10% more bytes; JPEG keeps Pillow's defaults."""

from __future__ import annotations

import io

from PIL import Image

CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp"}
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}


def encode_image(image: Image.Image, fmt: str, quality: int = 95) -> bytes:
    """`fmt` is jpeg, png or webp; quality applies to the lossy ones."""
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=1)
    elif fmt == "webp":
        image.save(buffer, format="WEBP", quality=quality, method=0)
    else:
        image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
