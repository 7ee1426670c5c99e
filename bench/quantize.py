"""Quantization error: the quantized modules' outputs against the unquantized model's, on random weights.

    .venv/bin/python bench/quantize.py [--models tiny,mid] [--modes int8,fp8w] [--dtype bfloat16] [--steps 4]
                                       [--size 256] [--device cpu|cuda]   # --modes int8,fp8 on a GPU (8.9+)

Random weights cannot judge image quality, so this measures what quantization changes in the numbers the
stages hand on, on the same inputs: the relative error ‖out - ref‖ / ‖ref‖ of the AR model's logits for one
forward of a prompt (and how often the top token stays the same), and of the DiT's velocity at each step of
a guided denoise from the same noise and prior tokens (each model on its own trajectory, so the error of a
step includes the drift of the steps before it), with the final latents' error. Models:

  tiny  the tiny test model (engine/tiny.py), loaded with the server's loader;
  mid   a mid-size random model from bench/full_size.py's builder: every component at the released width
        (AR hidden 4096, FFN 13696, the full vocabulary; DiT 32 heads x 128; ByT5-small's glyph encoder) with
        2 layers each instead of 40 / 30 / 12, and a small VAE (not quantized, not run here).

Modes: int8 and fp8 (the server's `--quantize int8|fp8`; fp8 on CUDA of capability 8.9+ only), and
`fp8w`, float8 weights alone through torchao's `Float8WeightOnlyConfig`: a CPU stand-in for fp8, which also
quantizes the activations and so errs somewhat more.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from dataclasses import dataclass

import torch
from full_size import Shapes, build_full_size_pipeline
from transformers import T5Config

from glm_image_server.config import Settings
from glm_image_server.engine import quantize
from glm_image_server.engine.dit import denoise
from glm_image_server.engine.loader import DTYPES, load_pipeline, quiet_library_logs
from glm_image_server.engine.prior import PriorTokens, chat_inputs
from glm_image_server.slices import EngineSettings

PROMPT = "a shop sign that reads 'OPEN' above a wooden door, warm evening light, photo"


def mid_shapes() -> Shapes:
    """The released widths, 2 layers per stack."""
    ar = Shapes().ar
    ar.text_config.num_hidden_layers, ar.vision_config.depth = 2, 2
    glyph = Shapes().glyph
    glyph.num_layers = 2
    dit = {"attention_head_dim": 128, "num_attention_heads": 32, "num_layers": 2}
    vae = {
        "block_out_channels": (32, 32, 32, 32),
        "down_block_types": ["DownEncoderBlock2D"] * 4,
        "up_block_types": ["UpDecoderBlock2D"] * 4,
        "latent_channels": 16,
        "norm_num_groups": 32,
        "latents_mean": [0.1] * 16,
        "latents_std": [0.9] * 16,
    }
    return Shapes(ar=ar, glyph=T5Config(**glyph.to_dict()), dit=dit, vae=vae)


def load(model: str, dtype: torch.dtype, device: str):
    if model == "tiny":
        name = {v: k for k, v in DTYPES.items()}[dtype]
        return load_pipeline(EngineSettings.from_settings(Settings(model="tiny", device=device, dtype=name)))
    return build_full_size_pipeline(device, dtype, shapes=mid_shapes())


def quantized_copy(pipe, mode: str):
    """The pipeline with deep copies of its AR model and DiT, quantized; the other components shared."""
    components = dict(pipe.components)
    for name in ("vision_language_encoder", "transformer"):
        components[name] = copy.deepcopy(components[name])
    twin = type(pipe)(**components)
    twin.set_progress_bar_config(disable=True)
    if mode == "fp8w":
        q = quantize._torchao()
        for module in quantize.quantized_modules(twin).values():
            q.quantize_(
                module, q.Float8WeightOnlyConfig(), filter_fn=lambda m, _: isinstance(m, torch.nn.Linear)
            )
    else:
        quantize.check_quantize(mode, twin._execution_device)
        quantize.quantize_pipeline(twin, mode)
    return twin


def relative(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


@torch.no_grad()
def ar_logits(pipe, size: int) -> torch.Tensor:
    inputs = chat_inputs(pipe, [PROMPT], size, size, None)
    return pipe.vision_language_encoder(**inputs).logits[0].float()


def dit_run(pipe, prior: PriorTokens, size: int, steps: int) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Each step's velocity (both guidance rows) and the final latents of one guided denoise."""
    velocities: list[torch.Tensor] = []
    hook = pipe.transformer.register_forward_hook(lambda _m, _a, out: velocities.append(out[0].float()))
    try:
        latents = denoise(pipe, PROMPT, [], size, size, steps, 1.5, prior, torch.Generator().manual_seed(5))
    finally:
        hook.remove()
    return velocities, latents


@dataclass
class Row:
    model: str
    mode: str
    weights: str
    logits: float
    top1: float
    velocity: list[float]
    final: float


def measure(
    model: str, dtype: torch.dtype, device: str, modes: list[str], size: int, steps: int
) -> list[Row]:
    pipe = load(model, dtype, device)
    start = time.perf_counter()
    logits = ar_logits(pipe, size)
    grid = (size // 16) ** 2
    vocab = pipe.transformer.config.prior_vq_quantizer_codebook_size
    tokens = torch.randint(0, vocab, (1, grid), generator=torch.Generator().manual_seed(1))
    prior = PriorTokens(tokens, None, None)
    velocities, latents = dit_run(pipe, prior, size, steps)
    print(f"  {model}: reference run {time.perf_counter() - start:.1f} s", file=sys.stderr)
    rows = []
    for mode in modes:
        twin = quantized_copy(pipe, mode)
        sizes = {
            name: (quantize.weight_bytes(quantize.quantized_modules(pipe)[name]), quantize.weight_bytes(m))
            for name, m in quantize.quantized_modules(twin).items()
        }
        weights = ", ".join(f"{name} {after / before:.2f}x" for name, (before, after) in sizes.items())
        out = ar_logits(twin, size)
        top1 = (out.argmax(-1) == logits.argmax(-1)).float().mean().item()
        q_velocities, q_latents = dit_run(twin, prior, size, steps)
        per_step = [relative(v, r) for v, r in zip(q_velocities, velocities, strict=True)]
        rows.append(
            Row(model, mode, weights, relative(out, logits), top1, per_step, relative(q_latents, latents))
        )
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="tiny,mid")
    parser.add_argument("--modes", default="int8,fp8w")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    parser.add_argument("--size", type=int, default=256, help="image side: the AR grid and the DiT latents")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    quiet_library_logs()
    torch.manual_seed(0)
    dtype = DTYPES[args.dtype]
    threads = torch.get_num_threads()
    print(f"device={args.device} dtype={args.dtype} size={args.size} steps={args.steps} threads={threads}")
    print("relative error against the unquantized model (‖out - ref‖ / ‖ref‖); weights: bytes after/before")
    header = "| model | mode | weights | AR logits | AR top-1 same | DiT velocity per step | final latents |"
    print(header)
    print("|" + " --- |" * header.count(" | ") + " --- |")
    for model in args.models.split(","):
        for row in measure(model, dtype, args.device, args.modes.split(","), args.size, args.steps):
            steps = " ".join(f"{e:.4f}" for e in row.velocity)
            print(
                f"| {row.model} | {row.mode} | {row.weights} | {row.logits:.4f} | {row.top1:.1%} | {steps} "
                f"| {row.final:.4f} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
