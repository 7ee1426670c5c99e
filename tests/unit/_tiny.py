"""The tiny GLM-Image for the unit tests here, built offline and loaded like real weights (no conftest)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def load_tiny(cache_dir: Path):
    """The tiny pipeline on the CPU, through the server's own loader."""
    from glm_image_server.config import Settings
    from glm_image_server.engine.loader import load_pipeline
    from glm_image_server.slices import EngineSettings

    return load_pipeline(
        EngineSettings.from_settings(Settings(model="tiny", device="cpu", cache_dir=cache_dir))
    )


def noise_image(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
