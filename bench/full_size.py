"""A full-size GLM-Image with random weights, for GPU benchmarks where the real weights cannot be fetched.

Speed and memory depend on shapes, not on weight values (docs/benchmarks.md, `--full-size`). The shapes are
the released ones: AR = transformers' `GlmImageConfig()` defaults, DiT = 30 layers of 32 heads x 128, glyph
encoder = ByT5-small's encoder, VAE = CogView4's 16-channel AutoencoderKL (its widths recalled offline, not
checked against the file). Weights are made directly on the target device in the target dtype, so no fp32
copy of 16B parameters is ever materialised; on the meta device nothing is allocated (the tests count
parameters there). The AR tokenizer, processor (with the real 512²..2048² reference bounds) and scheduler
are the tiny model's, as the real ones cannot be obtained offline; images are noise. Not part of the
server: the bench scripts import it as `full_size` (their folder is on sys.path), and so do the tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import GlmImageConfig, T5Config

from glm_image_server.engine import tiny

REAL_MIN_PIXELS, REAL_MAX_PIXELS = 512 * 512, 2048 * 2048
RELEASED_ROPE = {
    "rope_type": "default",
    "rope_theta": 10000.0,
    "partial_rotary_factor": 0.5,
    "mrope_section": [8, 12, 12],
}


@dataclass(frozen=True)
class Shapes:
    """Component shapes; the defaults are the released model's, tests pass smaller ones."""

    # transformers' defaults are the released shapes, but rotate the whole head: the release rotates half
    # (its mrope sections 8/12/12 sum to a quarter of the 128-wide head), and the defaults fail on the first
    # forward.
    ar: GlmImageConfig = field(
        default_factory=lambda: GlmImageConfig(text_config={"rope_parameters": RELEASED_ROPE})
    )
    glyph: T5Config = field(  # google/byt5-small's encoder
        default_factory=lambda: T5Config(
            vocab_size=384,
            d_model=1472,
            d_kv=64,
            d_ff=3584,
            num_layers=12,
            num_heads=6,
            feed_forward_proj="gated-gelu",
            dropout_rate=0.0,
            tie_word_embeddings=False,
            decoder_start_token_id=0,
        )
    )
    # 30 layers of 32 heads x 128; diffusers' defaults otherwise, which are the release's sizes.
    dit: dict[str, Any] = field(
        default_factory=lambda: {"attention_head_dim": 128, "num_attention_heads": 32}
    )
    vae: dict[str, Any] = field(  # CogView4's 16-channel VAE: four levels (scale factor 8), no quant convs
        default_factory=lambda: {
            "down_block_types": ["DownEncoderBlock2D"] * 4,
            "up_block_types": ["UpDecoderBlock2D"] * 4,
            "block_out_channels": (128, 512, 1024, 1024),
            "layers_per_block": 3,
            "latent_channels": 16,
            "norm_num_groups": 32,
            "sample_size": 1024,
            "scaling_factor": 1.0,
            "shift_factor": 0.0,
            "use_quant_conv": False,
            "use_post_quant_conv": False,
            "latents_mean": [0.0] * 16,
            "latents_std": [1.0] * 16,
        }
    )


def build_meta_modules(shapes: Shapes | None = None) -> dict[str, torch.nn.Module]:
    """The same modules on the meta device: shapes and parameter counts, no memory."""
    return tiny.build_modules(**vars(shapes or Shapes()), device="meta", dtype=torch.bfloat16)


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_full_size_pipeline(
    device: torch.device | str = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    shapes: Shapes | None = None,
    seed: int = 0,
):
    """A GlmImagePipeline with the released shapes and random weights, every tensor made on `device`."""
    with torch.random.fork_rng(devices=range(torch.cuda.device_count())):
        torch.manual_seed(seed)
        modules = tiny.build_modules(**vars(shapes or Shapes()), device=device, dtype=dtype)
    pipe = tiny.random_pipeline(modules, REAL_MIN_PIXELS, REAL_MAX_PIXELS)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_full_size_pipeline(directory: Path, device: torch.device | str = "cuda", **kwargs: Any) -> Path:
    """Build and `save_pretrained` to `directory` (about 32 GB in bf16), loadable with `--model DIR`."""
    build_full_size_pipeline(device, **kwargs).save_pretrained(directory)
    return Path(directory)
