"""Corrupt image files, for proving that no input image, however broken, is the server's error: small
PNG/JPEG/WEBP/GIF files with metadata (EXIF, ICC, text chunks), then truncated, with bytes flipped,
with chunk lengths and CRCs broken, and a few hand-made hostile ones (text chunks that inflate past
Pillow's limit, EXIF that is not TIFF)."""

from __future__ import annotations

import io
import random
import struct
import zlib

from PIL import Image, PngImagePlugin

# Any ICC-looking bytes will do: Pillow carries the profile, it does not parse it when decoding.
FAKE_ICC = b"\x00\x00\x02\x0cADBE\x02\x10\x00\x00mntrRGB XYZ " + bytes(100)


def _exif(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # rotated: exif_transpose has work to do
    exif[0x010E] = "a description"
    return exif.tobytes()


def _picture(mode: str = "RGB") -> Image.Image:
    """A small gradient, so every format has pixels worth compressing."""
    pixels = [(x * 10 % 256, y * 15 % 256, (x + y) * 5 % 256, 200) for y in range(16) for x in range(24)]
    image = Image.new("RGBA", (24, 16))
    image.putdata(pixels)
    return image.convert(mode) if mode != "P" else image.convert("RGB").quantize(16)


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_with(chunk: bytes) -> bytes:
    """A valid PNG with `chunk` inserted right after IHDR (so Image.open reads it)."""
    png = _save(_picture(), "PNG")
    ihdr_end = 8 + 8 + 13 + 4
    return png[:ihdr_end] + chunk + png[ihdr_end:]


def valid_files() -> dict[str, bytes]:
    """Readable files that carry every kind of metadata the decoder meets."""
    text = PngImagePlugin.PngInfo()
    text.add_text("Comment", "plain")
    text.add_text("Title", "compressed " * 40, zip=True)
    text.add_itxt("Description", "international ✓", lang="en", tkey="desc", zip=True)
    gif = _picture("P")
    gif.info["transparency"] = 3
    return {
        "png-rgba-text": _save(_picture("RGBA"), "PNG", pnginfo=text),
        "png-icc-exif": _save(_picture(), "PNG", icc_profile=FAKE_ICC, exif=_exif()),
        "jpeg-exif-icc": _save(_picture(), "JPEG", exif=_exif(), icc_profile=FAKE_ICC, quality=80),
        "webp-exif-icc": _save(_picture("RGBA"), "WEBP", exif=_exif(3), icc_profile=FAKE_ICC),
        "gif-transparent-animated": _save(gif, "GIF", save_all=True, append_images=[_picture("P")]),
    }


def hostile_files() -> dict[str, bytes]:
    """Hand-made files that once got a 500: metadata Pillow refuses with ValueError or SyntaxError."""
    inflates = zlib.compress(b"a" * (8 << 20))  # 8 MiB of text in ~8 kB: past Pillow's MAX_TEXT_CHUNK
    not_tiff = b"this is not a TIFF header at all" * 4
    return {
        "png-ztxt-inflates": _png_with(_png_chunk(b"zTXt", b"Comment\x00\x00" + inflates)),
        "png-itxt-inflates": _png_with(_png_chunk(b"iTXt", b"Comment\x00\x01\x00\x00\x00" + inflates)),
        "png-exif-not-tiff": _png_with(_png_chunk(b"eXIf", not_tiff)),
        "png-bad-crc": _png_with(_png_chunk(b"tEXt", b"Comment\x00x")[:-1] + b"\x00"),
        "png-huge-chunk-length": _png_with(struct.pack(">I", 0x7FFFFFF0) + b"tEXt" + b"Comment\x00x"),
        "empty": b"",
        "png-signature-only": b"\x89PNG\r\n\x1a\n",
    }


def corrupt_files(flips: int = 24, seed: int = 7) -> dict[str, bytes]:
    """Every valid file truncated at several points and with single bytes changed (deterministic), plus
    the hostile ones."""
    rng = random.Random(seed)
    files = dict(hostile_files())
    for name, data in valid_files().items():
        for fraction in (0.1, 0.3, 0.5, 0.7, 0.9, 0.98):
            files[f"{name}-cut-{fraction}"] = data[: int(len(data) * fraction)]
        for index in range(flips):
            at = rng.randrange(len(data))
            files[f"{name}-flip-{index}@{at}"] = (
                data[:at] + bytes([data[at] ^ rng.randrange(1, 256)]) + data[at + 1 :]
            )
    return files
