"""A tiny random-weight GLM-Image, built offline from the real component classes and saved in HF format.

Tests and the demo load it with `from_pretrained`, the code path real weights take. Configs follow
diffusers' GLM-Image pipeline test, with what that test pulls from the hub built locally: a ByT5 tokenizer
(no files) with a small T5, and a character-level GLM tokenizer keeping the real special-token ids so that
`GlmImageConfig` defaults hold. Its images are noise; its code paths are the real model's.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, models, pre_tokenizers
from transformers import (
    ByT5Tokenizer,
    GlmImageConfig,
    GlmImageForConditionalGeneration,
    GlmImageImageProcessorPil,
    GlmImageProcessor,
    PreTrainedTokenizerFast,
    T5Config,
    T5EncoderModel,
)

# Bump when the recipe changes so cached copies are rebuilt (the directory's name carries it).
# 2: non-trivial VAE latents_mean/latents_std, and the release's dynamically shifted scheduler.
RECIPE_VERSION = "2"
VOCAB_SIZE = 168064  # the real model's text vocabulary
VISION_VOCAB = 16512  # <|dit_token_0..16511|>: codes, then image start (16384) and end (16385)
SPECIAL_TOKENS = {
    "<|endoftext|>": 167841,  # pad
    "<sop>": 167845,  # grid begin
    "<eop>": 167846,  # grid end
    "<|image|>": 167855,  # image placeholder
}
# Reconstructed template: an image becomes <image start><|image|><image end>, text is kept raw.
CHAT_TEMPLATE = (
    "{%- for m in messages -%}"
    "{%- if m.content is string -%}{{ m.content }}"
    "{%- else -%}{%- for item in m.content -%}"
    "{%- if item.type == 'image' -%}<|dit_token_16384|><|image|><|dit_token_16385|>"
    "{%- elif item.type == 'text' -%}{{ item.text }}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{%- endfor -%}"
)
# Reference sides 32..256 px (the real processor: 512..2048), so small test images are not upscaled.
TINY_MIN_PIXELS, TINY_MAX_PIXELS = 32 * 32, 256 * 256
# The VAE's per-channel latent statistics: neither 0 nor 1 and different per channel, so that a skipped,
# swapped (mean for std) or mis-shaped normalisation changes the pixels (0 and 1 would hide all three).
TINY_LATENTS_MEAN = [0.3, -0.6, 0.15, 0.9]
TINY_LATENTS_STD = [0.7, 1.6, 0.45, 1.2]
# The release's scheduler: the shift mu depends on the image's size (research/field-figures.md); diffusers'
# defaults (no dynamic shifting) would leave the engine's mu unused and untested.
SCHEDULER_CONFIG = {
    "use_dynamic_shifting": True,
    "base_image_seq_len": 256,
    "base_shift": 0.25,
    "max_shift": 0.75,
    "max_image_seq_len": 4096,
    "time_shift_type": "linear",
}


def build_glm_tokenizer() -> PreTrainedTokenizerFast:
    """Character-level tokenizer whose special tokens sit at the real GLM-Image ids."""
    vocab = {f"<|dit_token_{i}|>": i for i in range(VISION_VOCAB)}
    for ch in [chr(c) for c in range(32, 127)] + ["\n", "<unk>"]:
        vocab[ch] = len(vocab)
    vocab.update(SPECIAL_TOKENS)
    used = set(vocab.values())
    vocab.update({f"<|reserved_{i}|>": i for i in range(VOCAB_SIZE) if i not in used})
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|dit_token_16384|>",
        eos_token="<|dit_token_16385|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        padding_side="left",  # batched AR generation relies on left padding
        extra_special_tokens={
            "image_token": "<|image|>",
            "grid_bos_token": "<sop>",
            "grid_eos_token": "<eop>",
        },
    )


def build_processor(tokenizer, min_pixels: int, max_pixels: int) -> GlmImageProcessor:
    """The AR processor; min/max_pixels bound reference images (the real model: 512², 2048²). Temporal patch
    and merge size 1: the vision patch embed views pixels as (-1, 3, patch, patch); PIL: no torchvision."""
    image_processor = GlmImageImageProcessorPil(
        patch_size=16,
        temporal_patch_size=1,
        merge_size=1,
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    return GlmImageProcessor(image_processor, tokenizer, chat_template=CHAT_TEMPLATE)


def build_modules(
    ar: GlmImageConfig,
    glyph: T5Config,
    dit: dict[str, Any],
    vae: dict[str, Any],
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int | None = None,
) -> dict[str, torch.nn.Module]:
    """The four neural components, random-initialised on `device` in `dtype`; with `seed`, reseeded before
    each, so each component's weights depend on its own shapes only."""
    from diffusers import AutoencoderKL, GlmImageTransformer2DModel

    parts = {
        "vision_language_encoder": partial(GlmImageForConditionalGeneration, ar),
        "text_encoder": partial(T5EncoderModel, glyph),
        "transformer": partial(GlmImageTransformer2DModel, **dit),
        "vae": partial(AutoencoderKL, **vae),
    }
    modules: dict[str, torch.nn.Module] = {}
    # Parameters are made on `device` in `dtype` (buffers made with an explicit dtype, like rotary
    # frequencies, keep it).
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            for name, build in parts.items():
                if seed is not None:
                    torch.manual_seed(seed)
                modules[name] = build().eval()
    finally:
        torch.set_default_dtype(previous)
    generation = modules["vision_language_encoder"].generation_config
    generation.do_sample, generation.temperature, generation.top_p = True, 0.9, 0.75  # the release's values
    return modules


def random_pipeline(modules: dict[str, torch.nn.Module], min_pixels: int, max_pixels: int):
    """A GlmImagePipeline of `modules`, the character-level AR and ByT5 tokenizers, the release scheduler."""
    from diffusers import FlowMatchEulerDiscreteScheduler, GlmImagePipeline

    return GlmImagePipeline(
        tokenizer=ByT5Tokenizer(),
        processor=build_processor(build_glm_tokenizer(), min_pixels, max_pixels),
        scheduler=FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG),
        **modules,
    )


def build_tiny_pipeline(seed: int = 0):
    """A GlmImagePipeline with random weights, deterministic for a given seed."""
    glyph = T5Config(
        vocab_size=384,  # ByT5's
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        decoder_start_token_id=0,
    )
    ar = GlmImageConfig(
        text_config={
            "vocab_size": VOCAB_SIZE,
            "hidden_size": 32,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "vision_vocab_size": 128,
            "rope_parameters": {"mrope_section": (4, 2, 2)},
        },
        # patch 16 as in the real model: the processor halves a reference, so (H/2)/16 == H/32 keeps the
        # reference's token grid in step with the DiT grid (the diffusers test's 8 breaks image-to-image).
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "num_heads": 2,
            "image_size": 32,
            "patch_size": 16,
            "intermediate_size": 32,
        },
        vq_config={"embed_dim": 32, "num_embeddings": 128, "latent_channels": 32},
    )
    dit = {
        "in_channels": 4,
        "out_channels": 4,
        "num_layers": 2,
        "attention_head_dim": 8,
        "num_attention_heads": 2,
        "text_embed_dim": glyph.d_model,
        "time_embed_dim": 16,
        "condition_dim": 8,
        "prior_vq_quantizer_codebook_size": 128,
    }
    vae = {
        "block_out_channels": (4, 8, 16, 16),
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "norm_num_groups": 4,
        "sample_size": 128,
        "latents_mean": TINY_LATENTS_MEAN,
        "latents_std": TINY_LATENTS_STD,
    }
    modules = build_modules(ar, glyph, dit, vae, seed=seed)
    return random_pipeline(modules, TINY_MIN_PIXELS, TINY_MAX_PIXELS)


def ensure_tiny_model(cache_dir: Path) -> Path:
    """Build the tiny model into `cache_dir` once and return its directory; the build goes to a temporary
    sibling renamed into place, so concurrent callers never see a half-written model."""
    target = Path(cache_dir) / f"tiny-glm-image-v{RECIPE_VERSION}"
    if (target / "model_index.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=target.parent))
    try:
        with torch.random.fork_rng():  # the build seeds torch; leave the caller's RNG as it was
            build_tiny_pipeline().save_pretrained(staging)
        try:
            os.rename(staging, target)
        except OSError:  # another process won the race
            if not (target / "model_index.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
