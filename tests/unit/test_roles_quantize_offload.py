"""The loader's three choices on the tiny model: a role loads only its components (the others' weights are
never read), int8 halves the quantized modules' weight bytes and leaves the others alone while the AR fast
path and batched guidance still run on them, and the modes a CPU cannot run (fp8, group offload) are
refused before any weight is read, as one line from the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from _tiny import noise_image
from diffusers import AutoencoderKL, GlmImageTransformer2DModel
from PIL import Image
from transformers import GlmImageForConditionalGeneration, T5EncoderModel

from glm_image_server.cli import main
from glm_image_server.config import Settings
from glm_image_server.engine.dit import LATENT_TOLERANCE, denoise
from glm_image_server.engine.loader import ROLE_COMPONENTS, ar_fast_path, load_pipeline
from glm_image_server.engine.offload import AR_ENTRY_POINTS, offload_mode, onload_on_call
from glm_image_server.engine.prior import generate_prior_tokens
from glm_image_server.engine.quantize import quantized_modules, tensor_bytes, weight_bytes
from glm_image_server.slices import EngineSettings

NEURAL = {
    "vision_language_encoder": GlmImageForConditionalGeneration,
    "text_encoder": T5EncoderModel,
    "transformer": GlmImageTransformer2DModel,
    "vae": AutoencoderKL,
}


def settings(cache: Path, **values) -> EngineSettings:
    return EngineSettings.from_settings(Settings(model="tiny", device="cpu", cache_dir=cache, **values))


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="module")
def int8_pipe(cache: Path):
    return load_pipeline(settings(cache, quantize="int8"))


def _refuse_loading(monkeypatch, classes) -> None:
    """Make `from_pretrained` of these classes fail: a role that never reads their weights still loads."""

    def refuse(cls, *args, **kwargs):
        raise AssertionError(f"{cls.__name__} was loaded")

    for cls in classes:
        monkeypatch.setattr(cls, "from_pretrained", classmethod(refuse))


@pytest.mark.parametrize("role", ["prior", "decode", "all"])
def test_a_role_loads_its_components_only(role: str, cache: Path, monkeypatch) -> None:
    wanted = ROLE_COMPONENTS[role]
    _refuse_loading(monkeypatch, [cls for name, cls in NEURAL.items() if name not in wanted])
    pipe = load_pipeline(settings(cache, role=role))
    loaded = {name for name, value in pipe.components.items() if value is not None}
    assert loaded == set(wanted)
    modules = [m for m in pipe.components.values() if isinstance(m, torch.nn.Module)]
    parameters = sum(p.numel() for m in modules for p in m.parameters())
    if role == "prior":  # nothing but the AR model's weights in memory
        assert parameters == sum(p.numel() for p in pipe.vision_language_encoder.parameters())
    assert pipe.processor.tokenizer.padding_side == "left"


def test_int8_halves_the_quantized_weights_and_leaves_the_rest(cache: Path) -> None:
    plain = load_pipeline(settings(cache, dtype="bfloat16"))
    int8 = load_pipeline(settings(cache, dtype="bfloat16", quantize="int8"))
    assert set(quantized_modules(int8)) == {"ar_language_model", "dit"}
    for name, module in quantized_modules(int8).items():
        before, after = _linear_weight_bytes(quantized_modules(plain)[name]), _linear_weight_bytes(module)
        rows = sum(m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))
        # Half of bf16, plus a scale (and zero point) of at most 8 bytes per output row: on the tiny model's
        # 8- to 64-wide rows that is 0.58x to 0.81x; on the real model's 4096-wide rows, 0.5005x.
        assert 0.5 * before < after <= 0.5 * before + 8 * rows, (name, before, after)
        assert weight_bytes(module) < 0.75 * weight_bytes(quantized_modules(plain)[name])
    for name in ("text_encoder", "vae"):
        assert weight_bytes(getattr(int8, name)) == weight_bytes(getattr(plain, name))
    vision = (int8.vision_language_encoder.model.visual, plain.vision_language_encoder.model.visual)
    assert weight_bytes(vision[0]) == weight_bytes(vision[1])


def _linear_weight_bytes(module: torch.nn.Module) -> int:
    """The Linear layers' weight matrices as stored (biases stay in their dtype)."""
    linears = [m for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return sum(tensor_bytes(m.weight) for m in linears)


def test_the_ar_fast_path_gives_the_default_loops_tokens_on_int8(int8_pipe) -> None:
    references = [[noise_image(1, (64, 96))]]

    def tokens(fast: bool):
        generators = [torch.Generator().manual_seed(11)]
        prior = generate_prior_tokens(int8_pipe, ["a sign"], 64, 96, references, generators, fast=fast)
        return prior.token_ids

    assert torch.equal(tokens(fast=True), tokens(fast=False))


def test_batched_guidance_matches_the_pipelines_two_passes_on_int8(int8_pipe) -> None:
    prompt, generators = "a 'sign'", [torch.Generator().manual_seed(3)]
    prior = generate_prior_tokens(int8_pipe, [prompt], 64, 64, None, generators)
    with torch.inference_mode():
        stock = int8_pipe(
            prompt=prompt,
            height=64,
            width=64,
            num_inference_steps=3,
            guidance_scale=1.5,
            prior_token_ids=prior.token_ids,
            generator=torch.Generator().manual_seed(5),
            output_type="latent",
        ).images
        batched = denoise(int8_pipe, prompt, [], 64, 64, 3, 1.5, prior, torch.Generator().manual_seed(5))
    assert (batched - stock).abs().max() < LATENT_TOLERANCE


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"quantize": "fp8"}, "quantize=fp8 needs a CUDA GPU of compute capability 8.9"),
        ({"offload": "group"}, "offload=group streams weights to a CUDA GPU"),
        ({"offload": "group", "cpu_offload": True}, "contradicts offload=group"),
    ],
)
def test_what_the_cpu_cannot_run_is_refused_before_loading(values: dict, message: str, tmp_path) -> None:
    # A model that does not exist: the refusal must come before any attempt to read it.
    engine = EngineSettings.from_settings(
        Settings(model=str(tmp_path / "absent"), device="cpu", cache_dir=tmp_path, **values)
    )
    with pytest.raises(RuntimeError, match=message):
        load_pipeline(engine)


def test_fp8_on_the_cpu_is_one_line_from_the_cli(capsys, tmp_path) -> None:
    argv = ["generate", "x", "--device", "cpu", "--quantize", "fp8", "-o", str(tmp_path / "a.png")]
    assert main([*argv, "--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("glm-image: error: quantize=fp8 needs a CUDA GPU")
    assert not any("Traceback" in line for line in err)


def test_cpu_offload_is_the_older_name_of_offload_model(cache: Path) -> None:
    assert offload_mode("none", cpu_offload=True) == "model"
    assert offload_mode("model", cpu_offload=True) == "model"
    assert offload_mode("group", cpu_offload=False) == "group"
    pipe = load_pipeline(settings(cache, cpu_offload=True))  # on the CPU: nothing to offload to, it runs
    assert pipe._execution_device == torch.device("cpu")


def test_group_offload_turns_the_ar_graph_off(cache: Path) -> None:
    assert ar_fast_path(settings(cache, offload="group")) is False
    assert ar_fast_path(settings(cache, offload="model")) is None  # the engine's default
    with pytest.raises(RuntimeError, match="cannot run under offload=group"):
        ar_fast_path(settings(cache, offload="group", ar_fast_path=True))


def test_generate_with_int8_makes_an_image(cache: Path, tmp_path: Path) -> None:
    out = tmp_path / "int8.png"
    argv = ["generate", "a sign that reads 'OPEN'", "--quantize", "int8", "--size", "64x64", "--steps", "2"]
    assert main([*argv, "--device", "cpu", "--cache-dir", str(cache), "-o", str(out)]) == 0
    with Image.open(out) as image:
        assert image.size == (64, 64)


def test_model_offload_moves_the_ar_model_for_its_image_methods_too(cache: Path) -> None:
    """Image-to-image calls the AR model's `get_image_features`/`get_image_tokens` before its `forward`;
    under model offload they must run the offload hook (which moves the model to the GPU) first."""
    pipe = load_pipeline(settings(cache, role="prior"))
    vle = pipe.vision_language_encoder
    calls: list[str] = []

    class Hook:
        def pre_forward(self, module):
            calls.append(type(module).__name__)

    vle._hf_hook = Hook()
    onload_on_call(vle, AR_ENTRY_POINTS)
    generators = [torch.Generator().manual_seed(1)]
    prior = generate_prior_tokens(pipe, ["x"], 64, 64, [[noise_image(1, (64, 64))]], generators)
    assert prior.image_token_ids is not None
    # features, then tokens (generate() may ask for features again: each call runs the hook first)
    assert len(calls) >= 2 and set(calls) == {"GlmImageForConditionalGeneration"}
