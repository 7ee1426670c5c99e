"""The tiny model's configs hold no identity values that would hide a mistake: a skipped or swapped latent
normalisation, or an unused scheduler shift, must change the pixels of the engine-vs-pipeline tests."""

from __future__ import annotations

import sys
from pathlib import Path

from glm_image_server.engine.tiny import RECIPE_VERSION, ensure_tiny_model


def test_the_saved_tiny_model_is_not_trivially_configured(pipe, model_cache: Path) -> None:
    assert ensure_tiny_model(model_cache).name == f"tiny-glm-image-v{RECIPE_VERSION}"
    vae = pipe.vae.config
    assert len(set(vae.latents_mean)) == len(vae.latents_mean) and 0.0 not in vae.latents_mean
    assert len(set(vae.latents_std)) == len(vae.latents_std) and 1.0 not in vae.latents_std
    assert set(vae.latents_mean).isdisjoint(vae.latents_std)  # swapping them changes the result
    scheduler = pipe.scheduler.config
    assert scheduler.use_dynamic_shifting and scheduler.base_shift != scheduler.max_shift


def test_the_full_size_ar_rotary_fits_its_mrope_sections() -> None:
    """The released AR rotates half of each 128-wide head in mrope sections 8/12/12; with transformers'
    default (the whole head) the first forward fails to split the frequencies."""
    import torch
    from transformers import GlmImageForConditionalGeneration

    sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))  # as the bench scripts import it
    from full_size import Shapes

    config = Shapes().ar
    config.text_config.num_hidden_layers, config.vision_config.depth = 1, 1
    with torch.device("meta"):
        rotary = GlmImageForConditionalGeneration(config).model.language_model.rotary_emb
    assert rotary.inv_freq.shape[-1] == sum(rotary.mrope_section) == 32
