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
    size = image_processor.size  # type: ignore[attr-defined]
    min_pixels = size.get("shortest_edge") if hasattr(size, "get") else size.shortest_edge
    max_pixels = size.get("longest_edge") if hasattr(size, "get") else size.longest_edge
    low = math.ceil(round(math.sqrt(min_pixels)) / GRID) * GRID
    high = round(math.sqrt(max_pixels)) // GRID * GRID
    return max(GRID, low), high


def crop_to_aspect(image: Image.Image, max_aspect: float = MAX_ASPECT) -> Image.Image:
    """Centre-crop panoramas beyond `max_aspect`: the processor cannot take them."""
    w, h = image.size
    if w > h * max_aspect:
        keep = int(h * max_aspect)
        return image.crop(((w - keep) // 2, 0, (w - keep) // 2 + keep, h))
    if h > w * max_aspect:
        keep = int(w * max_aspect)
        return image.crop((0, (h - keep) // 2, w, (h - keep) // 2 + keep))
    return image


def fit_reference(image: Image.Image, min_side: int, max_side: int) -> Image.Image:
    """Resize to sides on the 32-px grid, shortest side >= min_side, longest side <= max_side.

    Aspect ratio is kept as closely as the grid allows (after cropping to what the bounds can hold); an
    image already on the grid is returned as is.
    """
    image = crop_to_aspect(image, min(MAX_ASPECT, max_side / min_side))
    w, h = image.size
    scale = 1.0
    if min(w, h) < min_side:
        scale = min_side / min(w, h)
    if max(w, h) * scale > max_side:
        scale = max_side / max(w, h)

    def snap(side: float) -> int:
        return max(GRID, min(max_side, round(side * scale / GRID) * GRID))

    new_w, new_h = snap(w), snap(h)
    if (new_w, new_h) == image.size:
        return image
    return image.resize((new_w, new_h), Image.Resampling.LANCZOS)
