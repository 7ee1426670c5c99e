"""Decode untrusted image bytes into RGB pictures the model can take."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageOps

from ..core.request import InvalidRequest

# Formats sniffed from the bytes (never from a name or a Content-Type); the rest of Pillow's plugins
# (EPS through Ghostscript, for one) are not for untrusted input.
INPUT_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")  # JPEG covers phones' MPO files


def decode_image(data: bytes, field: str, max_pixels: int) -> Image.Image:
    """Bytes -> upright RGB image (EXIF orientation applied, alpha over white, not black), refused above
    `max_pixels` from the header, before any pixel is decoded. Whatever Pillow raises (OSError, ValueError,
    SyntaxError, struct.error, EOFError… from corrupt chunks, EXIF or ICC data) is the client's error,
    named by `field`: the bytes are untrusted, so no failure to read them is the server's."""
    try:
        image = Image.open(io.BytesIO(data), formats=INPUT_FORMATS)
    except Image.DecompressionBombError as exc:
        raise InvalidRequest(field, str(exc), f"at most {max_pixels} pixels") from exc
    except Exception as exc:
        raise InvalidRequest(
            field, "is not a readable image", "PNG, JPEG, WEBP, GIF, BMP or TIFF bytes"
        ) from exc
    if image.width * image.height > max_pixels:
        raise InvalidRequest(
            field,
            f"has {image.width}x{image.height} = {image.width * image.height} pixels",
            f"at most {max_pixels} pixels",
        )
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        return image.convert("RGB")
    except Exception as exc:
        raise InvalidRequest(
            field, f"could not be decoded: {type(exc).__name__}: {exc}", "a complete image file"
        ) from exc


def read_image(path: str | Path, field: str, max_pixels: int) -> Image.Image:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InvalidRequest(field, f"cannot read {path}: {exc.strerror}", "a readable image file") from exc
    return decode_image(data, field, max_pixels)
