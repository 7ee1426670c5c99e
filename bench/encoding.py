"""Encoding: milliseconds per 1024² image for JPEG q95, PNG and WEBP, our settings versus Pillow's
defaults, side by side.

    .venv/bin/python bench/encoding.py [--repeats 10]

The image is a 1024² picture with gradients, shapes, text and mild noise (a generated photo's
statistics; the tiny model's noise images would flatter no one). Every variant's bytes are decoded
again to check they are a valid image of the right size. Prints ms per image (median) and size.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

import numpy as np
from PIL import Image, ImageDraw

from glm_image_server.media.encode import encode_image


def test_image() -> Image.Image:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:1024, 0:1024]
    base = np.stack([x / 4, y / 4, (x + y) / 8], axis=-1) + rng.normal(0, 6, (1024, 1024, 3))
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for i in range(12):
        draw.ellipse([60 * i, 40 * i, 60 * i + 300, 40 * i + 200], fill=(30 * i % 255, 200 - 10 * i, 90))
        draw.text((40, 80 * i), f"GLM-Image line {i}: OPEN 24/7", fill=(255, 255, 255))
    return image


VARIANTS = {
    "JPEG q95, ours": lambda im: encode_image(im, "jpeg", 95),
    "JPEG q95, Pillow default": lambda im: _save(im, "JPEG", quality=95),
    "PNG, ours": lambda im: encode_image(im, "png"),
    "PNG, Pillow default (level 6)": lambda im: _save(im, "PNG"),
    "WEBP q95, ours": lambda im: encode_image(im, "webp", 95),
    "WEBP q95, Pillow default (method 4)": lambda im: _save(im, "WEBP", quality=95),
}


def _save(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    image = test_image()
    times: dict[str, list[float]] = {name: [] for name in VARIANTS}
    sizes: dict[str, int] = {}
    for _ in range(args.repeats):  # interleaved, so noise hits every variant alike
        for name, encode in VARIANTS.items():
            start = time.perf_counter()
            data = encode(image)
            times[name].append(time.perf_counter() - start)
            sizes[name] = len(data)
            assert Image.open(io.BytesIO(data)).size == (1024, 1024)
    for name in VARIANTS:
        print(f"{name:<38} {statistics.median(times[name]) * 1000:7.1f} ms  {sizes[name] / 1024:7.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
