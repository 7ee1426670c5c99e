"""The DiT path of model/dit.py against the stock pipeline on the tiny CPU model.

Without guidance its loop must equal `pipe(...)` bit for bit (it is the same loop). With guidance the two
passes run as one batch of two, which is not bitwise equal (every matmul sees another shape, so the kernels
round differently): the final latents must stay within `LATENT_TOLERANCE` (measured: under 1e-6 on latents
of magnitude ~4) and the 8-bit images within one level. VAE tiling is checked to run and to leave images
below the tile size untouched; on the random tiny VAE, tiled and untiled decodes of larger images differ a
lot (GroupNorm statistics are taken per tile), so that is printed, not held to a tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny import load_tiny, noise_image

from glm_image_server.core.request import GenerationRequest
from glm_image_server.engine.dit import LATENT_TOLERANCE, _MaskedAttnProcessor, denoise, needs_tiling
from glm_image_server.engine.engine import Engine
from glm_image_server.engine.prior import generate_prior_tokens

CASES = [
    ("a shop sign that reads 'OPEN' and 'CLOSED'", 0, (64, 96)),  # glyph text longer than the empty one
    ("no quoted text", 0, (96, 64)),  # both glyph sequences one token: no padding
    ("make the 'sky' blue", 2, (96, 128)),  # two references: reference keys read for one row only
]


@pytest.fixture(scope="module")
def pipe(tmp_path_factory: pytest.TempPathFactory):
    return load_tiny(tmp_path_factory.mktemp("tiny"))


def both(
    pipe, prompt: str, refs: int, size: tuple[int, int], guidance: float
) -> tuple[torch.Tensor, torch.Tensor]:
    height, width = size
    references = [noise_image(i, (64 + 32 * i, 96)) for i in range(refs)]
    prior = generate_prior_tokens(
        pipe, [prompt], height, width, [references] if refs else None, [torch.Generator().manual_seed(3)]
    )
    with torch.inference_mode():  # as the engine runs both
        stock = pipe(
            prompt=prompt,
            image=references or None,
            height=height,
            width=width,
            num_inference_steps=3,
            guidance_scale=guidance,
            prior_token_ids=prior.token_ids,
            prior_token_image_ids=prior.image_token_ids,
            source_image_grid_thw=prior.image_grids,
            generator=torch.Generator().manual_seed(5),
            output_type="latent",
        ).images
        ours = denoise(
            pipe, prompt, references, height, width, 3, guidance, prior, torch.Generator().manual_seed(5)
        )
    return stock, ours


@pytest.mark.parametrize(("prompt", "refs", "size"), CASES)
def test_without_guidance_the_loop_is_the_pipelines(pipe, prompt: str, refs: int, size) -> None:
    stock, ours = both(pipe, prompt, refs, size, guidance=1.0)
    assert torch.equal(ours, stock)


@pytest.mark.parametrize(("prompt", "refs", "size"), CASES)
def test_batched_guidance_matches_two_passes_within_tolerance(pipe, prompt: str, refs: int, size) -> None:
    stock, ours = both(pipe, prompt, refs, size, guidance=1.5)
    difference = (ours - stock).abs().max().item()
    scale = stock.abs().max().item()
    print(
        f"\n{prompt!r} refs={refs}: max |batched - two passes| = {difference:.2e} (latents up to {scale:.2f})"
    )
    assert difference < LATENT_TOLERANCE


def test_the_stock_attention_processor_is_put_back(pipe) -> None:
    before = [block.attn1.processor for block in pipe.transformer.transformer_blocks]
    both(pipe, *CASES[0], guidance=1.5)
    after = [block.attn1.processor for block in pipe.transformer.transformer_blocks]
    assert after == before and not any(isinstance(p, _MaskedAttnProcessor) for p in after)


def pixels(engine: Engine, request: GenerationRequest) -> np.ndarray:
    return np.asarray(engine.generate([request])[0].images[0]).astype(int)


def test_engine_switch_changes_images_by_at_most_one_level(pipe) -> None:
    request = GenerationRequest(prompt=CASES[0][0], width=96, height=64, num_inference_steps=3, seed=2)
    default, batched = pixels(Engine(pipe), request), pixels(Engine(pipe, batched_cfg=True), request)
    assert np.abs(default - batched).max() <= 1


def test_vae_tiling_only_beyond_the_tile_and_runs(pipe) -> None:
    tile = pipe.vae.tile_sample_min_size  # 128 px on the tiny VAE, 1024 on the real one
    small = GenerationRequest(prompt="x", width=tile, height=tile, num_inference_steps=1, seed=1)
    assert np.array_equal(pixels(Engine(pipe), small), pixels(Engine(pipe, vae_tiling=True), small))
    large = GenerationRequest(prompt="x", width=2 * tile, height=2 * tile, num_inference_steps=1, seed=1)
    assert needs_tiling(pipe.vae, torch.zeros(1, 4, 2 * tile // 8, 2 * tile // 8))
    untiled, tiled = pixels(Engine(pipe), large), pixels(Engine(pipe, vae_tiling=True), large)
    assert tiled.shape == untiled.shape == (2 * tile, 2 * tile, 3)
    difference = np.abs(tiled - untiled)
    side = 2 * tile
    print(
        f"\ntiled vs untiled decode at {side}²: mean {difference.mean():.1f}, max {difference.max()} levels"
    )
    assert not pipe.vae.use_tiling  # switched off again after the decode


def test_attention_is_already_fused_sdpa(pipe) -> None:
    """What the stock components use, so there is no attention processor to swap in for speed: the DiT's
    `GlmImageAttnProcessor` calls `dispatch_attention_fn`, whose default backend is PyTorch SDPA (flash /
    memory-efficient kernels on CUDA), and the AR model runs transformers' sdpa attention."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry
    from diffusers.models.transformers.transformer_glm_image import GlmImageAttnProcessor

    processors = [block.attn1.processor for block in pipe.transformer.transformer_blocks]
    assert all(type(p) is GlmImageAttnProcessor and p._attention_backend is None for p in processors)
    assert _AttentionBackendRegistry.get_active_backend()[0] == AttentionBackendName.NATIVE
    assert pipe.vision_language_encoder.config.get_text_config()._attn_implementation == "sdpa"
