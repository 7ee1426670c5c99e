"""The tiny model's configs hold no identity values that would hide a mistake: a skipped or swapped latent
normalisation, or an unused scheduler shift, must change the pixels of the engine-vs-pipeline tests."""

from __future__ import annotations

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
