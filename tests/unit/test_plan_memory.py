"""The memory figures worker/memory.py keeps as constants (the API process plans without torch) are the
released shapes' own: recounted here from bench/full_size.py's modules on the meta device, and the
planner's arithmetic per role and quantization checked against those counts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
from transformers.models.glm_image.processing_glm_image import GlmImageProcessor

from glm_image_server.worker import memory
from glm_image_server.worker.memory import COMPONENTS, GIB, ROLE_COMPONENTS, component_bytes, estimate

sys.path.append(str(Path(__file__).resolve().parents[2] / "bench"))  # as the bench scripts import it

from full_size import build_meta_modules, parameter_count

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def meta() -> dict[str, torch.nn.Module]:
    return build_meta_modules()


def _parts(meta) -> dict[str, tuple[list[torch.nn.Module], torch.nn.ModuleList | None]]:
    """Each component's modules on the meta device, and its repeated blocks (None: kept whole)."""
    vle, dit = meta["vision_language_encoder"], meta["transformer"]
    return {
        "ar_language_model": ([vle.model.language_model, vle.lm_head], vle.model.language_model.layers),
        "ar_vision": ([vle.model.visual], vle.model.visual.blocks),
        "ar_vq": ([vle.model.vqmodel], None),
        "dit": ([dit], dit.transformer_blocks),
        "glyph_encoder": ([meta["text_encoder"]], None),
        "vae": ([meta["vae"]], None),
    }


def _linear(modules: list[torch.nn.Module]) -> int:
    return sum(
        m.weight.numel() for module in modules for m in module.modules() if isinstance(m, torch.nn.Linear)
    )


def test_the_components_cover_every_parameter_once(meta) -> None:
    counted = sum(COMPONENTS[name].params for name in ROLE_COMPONENTS["all"])
    assert counted == sum(parameter_count(module) for module in meta.values())
    assert set(ROLE_COMPONENTS["prior"]) | set(ROLE_COMPONENTS["decode"]) == set(COMPONENTS)
    assert not set(ROLE_COMPONENTS["prior"]) & set(ROLE_COMPONENTS["decode"])


@pytest.mark.parametrize("name", list(COMPONENTS))
def test_constants_are_the_meta_device_counts(meta, name: str) -> None:
    modules, blocks = _parts(meta)[name]
    component = COMPONENTS[name]
    assert component.params == sum(parameter_count(m) for m in modules)
    assert component.linear == _linear(modules)
    if component.blocks:
        assert blocks is not None and component.blocks == len(blocks)
        assert {parameter_count(b) for b in blocks} == {component.block}
        assert {_linear([b]) for b in blocks} == {component.block_linear}


def test_shapes_of_the_activation_formulas(meta) -> None:
    text = meta["vision_language_encoder"].config.text_config
    head_dim = text.hidden_size // text.num_attention_heads
    assert (
        text.num_hidden_layers,
        text.num_key_value_heads,
        head_dim,
    ) == (memory.AR_LAYERS, memory.AR_KV_HEADS, memory.AR_HEAD_DIM)
    assert text.intermediate_size == memory.AR_INTERMEDIATE
    dit, vae = meta["transformer"], meta["vae"]
    block = dit.transformer_blocks[0]
    assert dit.config.num_attention_heads * dit.config.attention_head_dim == memory.DIT_HIDDEN
    assert block.ff.net[0].proj.out_features == memory.DIT_FF
    assert dit.config.patch_size == memory.DIT_PATCH
    assert 2 ** (len(vae.config.block_out_channels) - 1) == memory.VAE_FACTOR
    # The last upsampler works at the output's resolution with this many channels.
    last_upsampler = [b for b in vae.decoder.up_blocks if b.upsamplers is not None][-1].upsamplers[0]
    assert memory.VAE_FULL_RES_CHANNELS == last_upsampler.conv.in_channels == last_upsampler.conv.out_channels


@pytest.mark.parametrize(("width", "height"), [(1024, 1024), (2048, 2048), (1024, 576), (768, 1024)])
@pytest.mark.parametrize("references", [False, True])
def test_generated_tokens_as_the_pipeline_counts_them(width: int, height: int, references: bool) -> None:
    """As the processor sizes its target grids and the pipeline counts `max_new_tokens`."""
    from diffusers import GlmImagePipeline

    shape = GlmImageProcessor._get_target_shape(None, height=height, width=width)  # uses no state
    grids = GlmImageProcessor._build_target_image_grid_thw(*shape, is_text_to_image=not references)
    max_new_tokens, *_ = GlmImagePipeline._compute_generation_params(grids, is_text_to_image=not references)
    assert memory.ar_generated_tokens(width, height, references) == max_new_tokens


def test_kv_cache_bytes_per_token() -> None:
    """2 (keys, values) x 40 layers x 2 KV heads x 128 x 2 bytes = 40 KiB per token and row."""
    one = memory.ar_activation_bytes(1024, 1024, rows=1)
    prefill = memory.PROMPT_TOKENS * 2 * memory.AR_INTERMEDIATE * 2
    assert one - prefill == 40 * 1024 * (memory.PROMPT_TOKENS + 1281)
    assert memory.ar_activation_bytes(1024, 1024, rows=8) == 8 * one


def _bf16_gib(meta, role: str) -> float:
    parts = _parts(meta)
    return sum(parameter_count(m) for n in ROLE_COMPONENTS[role] for m in parts[n][0]) * 2 / GIB


def _int8_gib(meta, role: str) -> float:
    """Linear weights of the AR language model and the DiT at one byte, everything else at two."""
    total = 0
    for name in ROLE_COMPONENTS[role]:
        modules = _parts(meta)[name][0]
        params, linear = sum(parameter_count(m) for m in modules), _linear(modules)
        total += linear + 2 * (params - linear) if name in ("ar_language_model", "dit") else 2 * params
    return total / GIB


@pytest.mark.parametrize("role", ["all", "prior", "decode"])
@pytest.mark.parametrize("quantize", ["none", "int8", "fp8"])
def test_weights_per_role_from_the_meta_counts(meta, role: str, quantize: str) -> None:
    found = estimate(role, quantize, "none", 1024)
    weights = sum(f.gib for f in found.figures if f.label.endswith("weights"))
    expected = _bf16_gib(meta, role) if quantize == "none" else _int8_gib(meta, role)
    assert weights == pytest.approx(expected, rel=1e-9)


def test_the_figures_per_role(meta) -> None:
    """The numbers the README states (GiB, bf16 weights): prior 18.8, decode 14.1, the whole model 32.9."""
    assert round(_bf16_gib(meta, "prior"), 1) == 18.8
    assert round(_bf16_gib(meta, "decode"), 1) == 14.1
    assert round(_bf16_gib(meta, "all"), 1) == 32.9
    assert round(_int8_gib(meta, "all"), 1) == 18.9
    # int8 halves what it touches: the quantized modules' Linear weights.
    for name in ("ar_language_model", "dit"):
        saved = component_bytes(name) - component_bytes(name, "int8")
        assert saved == COMPONENTS[name].linear


def test_peak_adds_the_largest_stage_to_the_weights() -> None:
    size = 1024
    ar = memory.ar_activation_bytes(size, size, 8) / GIB
    vae = memory.vae_activation_bytes(size, size) / GIB
    weights = sum(component_bytes(n) for n in ROLE_COMPONENTS["all"]) / GIB
    assert vae > ar  # the VAE decode is the largest stage at 1024²
    found = estimate("all", "none", "none", size)
    assert found.peak_gib == pytest.approx(weights + vae + memory.CUDA_CONTEXT_GIB)
    assert estimate("all", "none", "none", size, gpu=False).peak_gib == pytest.approx(weights + vae)


def test_group_offload_keeps_two_blocks_of_each_streamed_component() -> None:
    dit = COMPONENTS["dit"]
    resident = component_bytes("dit", offload="group")
    assert resident == 2 * (dit.params - dit.blocks * dit.block) + 2 * 2 * dit.block
    assert component_bytes("vae", offload="group") == component_bytes("vae")  # not streamed


def test_model_offload_peak_is_the_largest_component_with_its_activations() -> None:
    found = estimate("all", "none", "model", 1024)
    ar_part = sum(component_bytes(n) for n in ROLE_COMPONENTS["prior"]) / GIB
    ar = memory.ar_activation_bytes(1024, 1024, 8) / GIB
    assert found.peak_gib == pytest.approx(ar_part + ar + memory.CUDA_CONTEXT_GIB)


def test_what_a_reference_adds(meta) -> None:
    """A 1024² reference: 64x64 tokens, kept as keys and values in each DiT block and in the AR's cache."""
    dit = meta["transformer"]
    vision = meta["vision_language_encoder"].config.vision_config
    tokens = (1024 // vision.patch_size) ** 2
    assert tokens == (1024 // (memory.VAE_FACTOR * dit.config.patch_size)) ** 2 == 4096
    in_dit, in_ar = memory.reference_bytes(1024, 1024)
    assert in_dit == 2 * len(dit.transformer_blocks) * dit.config.num_attention_heads * 128 * tokens * 2
    assert in_ar == 40 * 1024 * tokens
    assert round(in_dit / GIB, 2) == 1.88


def test_the_readme_states_these_figures() -> None:
    """README's GPU section: each role's parameters and GiB (bf16, int8) as computed here."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for role, names in ROLE_COMPONENTS.items():
        params = sum(COMPONENTS[n].params for n in names) / 1e9
        bf16, int8 = (sum(component_bytes(n, q) for n in names) / GIB for q in ("none", "int8"))
        assert f"| **`{role}`** | {params:.2f} B | **{bf16:.2f}** | {int8:.2f} |" in readme, role
