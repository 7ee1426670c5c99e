"""Reference-image sizing that keeps the AR token grid and the VAE/DiT grid in step.

The processor's `smart_resize` rounds a reference to its pixel bounds while the pipeline's VAE path floors
it to 16 px without rescaling; any size where the two disagree crashes image-to-image (sides under the
processor's minimum, over its maximum, or not a multiple of 32). A reference that already has sides on
the 32-px grid within those bounds is a fixed point of both, so every reference is resized to one.
"""

from __future__ import annotations

import math

from PIL import Image

GRID = 32
MAX_ASPECT = 4.0  # smart_resize rejects anything wider


def side_bounds(image_processor: object) -> tuple[int, int]:
    """(min side, max side) in pixels from the processor's min/max pixel settings."""
    size = image_processor.size  # type: ignore[attr-defined]  # a dict or transformers' SizeDict
    min_pixels, max_pixels = size.get("shortest_edge"), size.get("longest_edge")
    low = math.ceil(round(math.sqrt(min_pixels)) / GRID) * GRID
    high = round(math.sqrt(max_pixels)) // GRID * GRID
    return max(GRID, low), high


def crop_to_aspect(image: Image.Image, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Centre-crop panoramas beyond `max_aspect`: the processor cannot take them."""
    w, h = image.size
    keep_w, keep_h = min(w, int(h * max_aspect)), min(h, int(w * max_aspect))
    if (keep_w, keep_h) == (w, h):
        return image
    left, top = (w - keep_w) // 2, (h - keep_h) // 2
    return image.crop((left, top, left + keep_w, top + keep_h))


def fitted_size(width: int, height: int, min_side: int, max_side: int) -> tuple[int, int]:
    """Sides on the 32-px grid, shortest >= min_side, longest <= max_side, aspect kept as the grid allows
    (the aspect ratio must fit the bounds: crop_to_aspect first)."""
    scale = max(1.0, min_side / min(width, height))
    if max(width, height) * scale > max_side:
        scale = max_side / max(width, height)

    def snap(side: int) -> int:
        return max(GRID, min(max_side, round(side * scale / GRID) * GRID))

    return snap(width), snap(height)


def fit_reference(image: Image.Image, min_side: int, max_side: int) -> Image.Image:
    """Crop what the bounds cannot hold, then resize onto the grid; an image already there is kept."""
    image = crop_to_aspect(image, min(MAX_ASPECT, max_side / min_side))
    size = fitted_size(image.width, image.height, min_side, max_side)
    return image if size == image.size else image.resize(size, Image.Resampling.LANCZOS)
