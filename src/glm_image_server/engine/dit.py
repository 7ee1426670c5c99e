"""DiT path with classifier-free guidance in one batched forward, and VAE tiling for large images.

`GlmImagePipeline.__call__` (diffusers 0.42.1) runs the DiT twice per step: conditional (prompt glyph
embeddings, prior tokens kept, reference keys/values read from its `GlmImageKVCache`) and unconditional
("" glyph embeddings, prior tokens dropped, the reference cache skipped). `denoise` is that loop step for
step with the two passes as one batch of two rows: the shorter glyph sequence zero-padded and its padding
masked out as keys (text tokens have no position embedding), the reference keys/values prepended to both
rows and masked out for the unconditional one. The pipeline's text-mask path hands SDPA a 0/1 float mask,
which is additive and masks nothing (diffusers #13587), so `_MaskedAttnProcessor` takes a boolean key mask.

A masked batch cannot use SDPA's flash kernel, and kernels block their sums by shape: on the tiny CPU model
the latents differ from the pipeline's by under `LATENT_TOLERANCE` (~1e-6 measured), the 8-bit images by a
level or two. So the engine keeps the pipeline's two passes by default.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_glm_image import GlmImageKVCache
from diffusers.pipelines.glm_image.pipeline_glm_image import calculate_shift, retrieve_timesteps
from PIL import Image

from .previews import latent_stats
from .prior import PriorTokens

LATENT_TOLERANCE = 1e-4
StepEnd = Callable[[object, int, torch.Tensor, dict], dict]


class _MaskedAttnProcessor:
    """`GlmImageAttnProcessor` with `attention_mask` a ready (batch, 1, 1, keys) boolean key mask."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        kv_cache=None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = encoder_hidden_states.dtype
        text_length = encoder_hidden_states.shape[1]
        hidden_states = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        query, key, value = (
            proj(hidden_states).unflatten(2, (attn.heads, -1)) for proj in (attn.to_q, attn.to_k, attn.to_v)
        )
        if attn.norm_q is not None:
            query = attn.norm_q(query).to(dtype=dtype)
        if attn.norm_k is not None:
            key = attn.norm_k(key).to(dtype=dtype)
        if image_rotary_emb is not None:
            for tensor in (query, key):
                tensor[:, text_length:] = apply_rotary_emb(
                    tensor[:, text_length:], image_rotary_emb, sequence_dim=1, use_real_unbind_dim=-2
                )
        if kv_cache is not None and kv_cache.mode == "read":
            key, value = kv_cache.get(key, value)
        out = dispatch_attention_fn(query, key, value, attn_mask=attention_mask)
        out = attn.to_out[1](attn.to_out[0](out.flatten(2, 3).to(query.dtype)))
        encoder_out, image_out = out.split([text_length, out.shape[1] - text_length], dim=1)
        return image_out, encoder_out


@contextlib.contextmanager
def masked_attention(transformer) -> Iterator[None]:
    """Install `_MaskedAttnProcessor` on every block for the duration, then put the originals back."""
    blocks = list(transformer.transformer_blocks)
    saved = [block.attn1.processor for block in blocks]
    processor = _MaskedAttnProcessor()
    try:
        for block in blocks:
            block.attn1.set_processor(processor)
        yield
    finally:
        for block, original in zip(blocks, saved, strict=True):
            block.attn1.set_processor(original)


def pad_text(cond: torch.Tensor, uncond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both (1, L, D) glyph sequences zero-padded at the end to one length, stacked; and (2, L) validity."""
    length = max(cond.shape[1], uncond.shape[1])
    rows, valid = [], torch.zeros((2, length), dtype=torch.bool, device=cond.device)
    for r, embeds in enumerate((cond, uncond)):
        rows.append(torch.nn.functional.pad(embeds, (0, 0, 0, length - embeds.shape[1])))
        valid[r, : embeds.shape[1]] = True
    return torch.cat(rows), valid


def key_mask(text_valid: torch.Tensor, reference_keys: int, image_tokens: int) -> torch.Tensor:
    """(2, 1, 1, keys) for keys = [reference cache | text | image]: the conditional row sees the reference
    keys and its text, the unconditional row its text only."""
    device = text_valid.device
    reference = torch.tensor([True, False], device=device)[:, None].expand(2, reference_keys)
    image = torch.ones((2, image_tokens), dtype=torch.bool, device=device)
    return torch.cat([reference, text_valid, image], dim=1)[:, None, None, :]


def _write_reference_cache(
    pipe, references: Sequence[Image.Image], prior: PriorTokens, embeds: torch.Tensor
) -> GlmImageKVCache:
    """Each reference's latents through the DiT once, keys/values kept, as the pipeline's step 6."""
    transformer, vae, device = pipe.transformer, pipe.vae, pipe._execution_device
    kv_caches = GlmImageKVCache(num_layers=transformer.config.num_layers)
    if not references:
        return kv_caches
    kv_caches.set_mode("write")
    mean, std = latent_stats(vae, device, embeds.dtype)
    multiple = pipe.vae_scale_factor * transformer.config.patch_size
    sizes = prior.image_grids[0].prod(dim=-1).tolist()
    for reference, token_ids in zip(references, torch.split(prior.image_token_ids[0], sizes), strict=True):
        # the pipeline's preprocessing: sides floored to the DiT grid, no rescale
        height, width = reference.height // multiple * multiple, reference.width // multiple * multiple
        image = pipe.image_processor.preprocess(reference, height=height, width=width)
        image = image.to(device=device, dtype=embeds.dtype)
        latent = (vae.encode(image).latent_dist.mode() - mean) / std
        transformer(
            hidden_states=latent,
            encoder_hidden_states=torch.zeros_like(embeds)[:1, :0, ...],
            prior_token_id=token_ids,
            prior_token_drop=torch.full_like(token_ids, False, dtype=torch.bool),
            timestep=torch.zeros((1,), device=device),
            target_size=torch.tensor([image.shape[-2:]], device=device),
            crop_coords=torch.zeros((1, 2), device=device),
            kv_caches=kv_caches,
        )
    kv_caches.next_sample()
    return kv_caches


def _timesteps(pipe, steps: int, height: int, width: int) -> torch.Tensor:
    """The pipeline's schedule: linspace timesteps, sigmas from them, resolution-dependent shift mu."""
    config, device = pipe.scheduler.config, pipe._execution_device
    seq_len = (height // pipe.vae_scale_factor) * (width // pipe.vae_scale_factor)
    seq_len //= pipe.transformer.config.patch_size**2
    timesteps = (
        np.linspace(config.num_train_timesteps, 1.0, steps + 1)[:-1].astype(np.int64).astype(np.float32)
    )
    sigmas = timesteps / config.num_train_timesteps
    mu = calculate_shift(
        seq_len,
        config.get("base_image_seq_len", 256),
        config.get("base_shift", 0.25),
        config.get("max_shift", 0.75),
    )
    timesteps, _ = retrieve_timesteps(pipe.scheduler, steps, device, timesteps, sigmas, mu=mu)
    return timesteps


@contextlib.contextmanager
def _guided_noise(
    pipe, prompt: str, references, height: int, width: int, guidance: float, prior
) -> Iterator[tuple[Callable[[torch.Tensor, torch.Tensor], torch.Tensor], torch.dtype]]:
    """The pipeline's steps 5-7 (glyph embeddings, the reference cache, the size conditions), then for the
    duration the guided noise prediction and the text's dtype; with guidance, as one masked batch of two."""
    transformer, device = pipe.transformer, pipe._execution_device
    cond, uncond = pipe.encode_prompt(prompt, guidance > 1, device=device, dtype=pipe.dtype)
    kv_caches = _write_reference_cache(pipe, references, prior, cond)
    kv_caches.set_mode("read" if references else None)
    prior_ids = prior.token_ids.to(device)
    text, key_valid, rows = cond, None, 1
    if guidance > 1:
        text, text_valid = pad_text(cond, uncond)
        cache = kv_caches[0]
        reference_keys = int(cache.k_caches[0].shape[1]) if cache.k_caches else 0
        key_valid, rows = key_mask(text_valid, reference_keys, prior_ids.shape[1]), 2
    sizes = torch.tensor([(height, width)], dtype=cond.dtype, device=device)
    crops = torch.zeros((1, 2), dtype=cond.dtype, device=device)
    drop = torch.zeros((rows, prior_ids.shape[1]), dtype=torch.bool, device=prior_ids.device)
    drop[1:] = True  # the unconditional row drops its prior tokens

    def noise(latents: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """One forward of one row, or of the conditional and unconditional rows, guidance applied."""
        out = transformer(
            hidden_states=latents.expand(rows, -1, -1, -1),
            encoder_hidden_states=text,
            prior_token_id=prior_ids.expand(rows, -1),
            prior_token_drop=drop,
            timestep=timestep.expand(rows),
            target_size=sizes.expand(rows, -1),
            crop_coords=crops.expand(rows, -1),
            attention_mask=key_valid,
            return_dict=False,
            kv_caches=kv_caches,
        )[0].float()
        if rows == 1:
            return out
        return out[1:2] + guidance * (out[0:1] - out[1:2])

    with masked_attention(transformer) if rows == 2 else contextlib.nullcontext():
        yield noise, text.dtype
    kv_caches.clear()


@torch.no_grad()  # as `pipe.__call__`: inside the engine's inference_mode, T5 rounds differently without it
def denoise(
    pipe,
    prompt: str,
    references: Sequence[Image.Image],
    height: int,
    width: int,
    steps: int,
    guidance: float,
    prior: PriorTokens,
    generator: torch.Generator,
    step_end: StepEnd | None = None,
) -> torch.Tensor:
    """One row's latents: `pipe(..., output_type="latent")` with the two guidance passes batched, equal up to
    rounding (without guidance, scale <= 1, one pass as in the pipeline, and bitwise equal)."""
    transformer = pipe.transformer
    with _guided_noise(pipe, prompt, references, height, width, guidance, prior) as (noise, dtype):
        latents = pipe.prepare_latents(
            1, transformer.config.in_channels, height, width, dtype, pipe._execution_device, generator
        )
        for i, t in enumerate(_timesteps(pipe, steps, height, width)):
            prediction = noise(latents.to(transformer.dtype), t.expand(1) - 1)
            latents = pipe.scheduler.step(prediction, t, latents, return_dict=False)[0]
            if step_end is not None:
                out = step_end(pipe, i, pipe.scheduler.sigmas[i], {"latents": latents})
                latents = out.pop("latents", latents)
    return latents


def needs_tiling(vae, latents: torch.Tensor) -> bool:
    """AutoencoderKL tiles only latents larger than its tile (real model: beyond 1024 px a side)."""
    return max(latents.shape[-2:]) > vae.tile_latent_min_size


@contextlib.contextmanager
def vae_tiling(vae, enabled: bool) -> Iterator[None]:
    """Tiled decoding for the duration when `enabled` (bounded activation memory at 2048²)."""
    if enabled:
        vae.enable_tiling()
    try:
        yield
    finally:
        if enabled:
            vae.disable_tiling()
