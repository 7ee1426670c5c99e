"""The full-size random-weight builder: the released shapes (counted on the meta device, no memory) and a
small-shape build on the CPU that runs end to end in bf16."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from transformers import GlmImageConfig, T5Config

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))  # as the bench scripts import it

from full_size import (
    Shapes,
    build_full_size_pipeline,
    build_meta_modules,
    parameter_count,
    save_full_size_pipeline,
)

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def meta() -> dict[str, torch.nn.Module]:
    return build_meta_modules()


def test_released_parameter_counts(meta) -> None:
    vle = meta["vision_language_encoder"]
    text = parameter_count(vle.model.language_model) + parameter_count(vle.lm_head)
    vision = parameter_count(vle.model.visual)
    dit, glyph = parameter_count(meta["transformer"]), parameter_count(meta["text_encoder"])
    vq, vae = parameter_count(vle.model.vqmodel), parameter_count(meta["vae"])
    print(f"\nAR text+head {text / 1e9:.3f}B, vision {vision / 1e9:.3f}B, VQ {vq / 1e6:.1f}M")
    print(f"DiT {dit / 1e9:.3f}B, glyph encoder {glyph / 1e6:.1f}M, VAE {vae / 1e6:.1f}M")
    assert text == pytest.approx(9.0e9, rel=0.03)  # "9B" AR: GLM-4-9B's 40 layers with a 16512-token head
    assert vision == pytest.approx(1.16e9, rel=0.03)
    assert dit == pytest.approx(7.0e9, rel=0.03)
    assert glyph == pytest.approx(217.7e6, rel=0.02)  # byt5-small: 300M, of which the encoder ~218M


def test_released_shapes(meta) -> None:
    vle, dit, vae = meta["vision_language_encoder"], meta["transformer"], meta["vae"]
    text = vle.config.text_config
    assert (text.num_hidden_layers, text.hidden_size, text.num_attention_heads) == (40, 4096, 32)
    assert (text.num_key_value_heads, text.intermediate_size, text.vocab_size) == (2, 13696, 168064)
    assert vle.lm_head.out_features == 16512 and vle.config.vq_config.num_embeddings == 16384
    assert (vle.config.vision_config.depth, vle.config.vision_config.hidden_size) == (40, 1536)
    assert len(dit.transformer_blocks) == 30 and dit.config.num_attention_heads * 128 == 4096
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 8 and vae.config.latent_channels == 16
    assert all(p.device.type == "meta" and p.dtype == torch.bfloat16 for p in dit.parameters())


def small_shapes() -> Shapes:
    ar = GlmImageConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 32,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "max_position_embeddings": 512,
            "vision_vocab_size": 128,
            "rope_parameters": {"mrope_section": (4, 2, 2)},
        },
        vision_config={
            "depth": 1,
            "hidden_size": 32,
            "num_heads": 2,
            "patch_size": 16,
            "intermediate_size": 32,
        },
        vq_config={"embed_dim": 32, "num_embeddings": 128, "latent_channels": 32},
    )
    glyph = T5Config(vocab_size=384, d_model=32, d_kv=8, d_ff=37, num_layers=1, num_heads=4, dropout_rate=0.0)
    dit = {
        "patch_size": 2,
        "in_channels": 4,
        "out_channels": 4,
        "num_layers": 1,
        "attention_head_dim": 8,
        "num_attention_heads": 2,
        "text_embed_dim": 32,
        "time_embed_dim": 16,
        "condition_dim": 8,
        "prior_vq_quantizer_codebook_size": 128,
    }
    vae = {
        "block_out_channels": (4, 8, 16, 16),
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "latent_channels": 4,
        "norm_num_groups": 4,
        "latents_mean": [0.0] * 4,
        "latents_std": [1.0] * 4,
    }
    return Shapes(ar=ar, glyph=glyph, dit=dit, vae=vae)


def test_device_build_is_made_in_the_target_dtype_and_runs() -> None:
    default_dtype = torch.get_default_dtype()
    pipe = build_full_size_pipeline("cpu", torch.bfloat16, small_shapes())
    assert torch.get_default_dtype() == default_dtype  # the construction context is undone
    for name in ("vision_language_encoder", "text_encoder", "transformer", "vae"):
        params = list(getattr(pipe, name).parameters())
        assert all(p.device.type == "cpu" and p.dtype == torch.bfloat16 for p in params), name
        assert all(torch.isfinite(p).all() for p in params), name
    image = pipe(
        prompt="a sign that reads 'HI'",
        height=64,
        width=64,
        num_inference_steps=1,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    assert image.size == (64, 64)


def test_saved_copy_loads_as_a_model_directory(tmp_path: Path) -> None:
    """`save_full_size_pipeline` writes what `--model DIR` (loader.load_pipeline) reads back."""
    from glm_image_server.config import Settings
    from glm_image_server.engine.loader import load_pipeline
    from glm_image_server.slices import EngineSettings

    directory = save_full_size_pipeline(tmp_path / "model", "cpu", dtype=torch.float32, shapes=small_shapes())
    settings = Settings(model=str(directory), device="cpu", cache_dir=tmp_path / "cache")
    pipe = load_pipeline(EngineSettings.from_settings(settings))
    assert pipe.transformer.config.num_layers == 1 and pipe.processor.tokenizer.padding_side == "left"
    assert pipe.vision_language_encoder.generation_config.top_p == 0.75
