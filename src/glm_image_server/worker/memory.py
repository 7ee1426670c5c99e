"""How much GPU memory a worker of each role needs for the real GLM-Image, without torch (the API process
plans its workers before any of them loads a model).

Weights come from parameter counts of the released shapes, counted on the meta device by
bench/full_size.py's builder and kept here as constants (tests/unit/test_plan.py recounts them); a
weight is 2 bytes in bf16, and int8 or fp8 weight-only quantization stores a Linear weight of the AR
language model and the DiT in 1 byte (embeddings, norms and biases stay bf16; the per-channel scales,
~0.05 %, are left out). Activations are estimates from formulas stated beside each figure, checked only
against the release's measured peaks (34-38 GB at 512²-1024², 45 GB at 2048², one image on an H100).
"""

from __future__ import annotations

from math import sqrt
from typing import NamedTuple

from ..core.job import Role

GIB = 2**30
BF16 = 2  # bytes per weight and per activation element
QUANTIZED_BYTES = 1  # int8 and fp8 weight-only: one byte per Linear weight
CUDA_CONTEXT_GIB = 1.0  # per worker process: CUDA context, kernels, cuBLAS workspace (an assumption)
GROUP_RESIDENT_BLOCKS = 2  # offload=group: the block running and the one prefetched on a side stream


class Component(NamedTuple):
    """One part of the model as counted on the meta device. `linear` is the weights of its Linear layers
    (what weight-only quantization shrinks); `blocks` x `block` the repeated layers offload=group streams
    (0 for a part kept whole); `part`: the pipeline component it belongs to (what offload=model moves)."""

    label: str
    params: int
    linear: int
    part: str
    quantized: bool = False
    blocks: int = 0
    block: int = 0
    block_linear: int = 0


# Parameter counts of bench/full_size.py's shapes on the meta device (transformers 5.23, diffusers 0.42.1).
AR = "vision_language_encoder"  # the pipeline component of the AR model
COMPONENTS = {
    "ar_language_model": Component(  # GLM-4-9B's 40 layers, embeddings and the 16512-token image head
        "AR language model", 8_914_788_352, 8_225_554_432, AR, True, 40, 203_969_024, 203_948_032
    ),
    "ar_vision": Component(
        "AR vision tower", 1_159_607_808, 1_132_462_080, AR, False, 40, 28_331_520, 28_311_552
    ),
    "ar_vq": Component("AR VQ tokenizer", 39_849_472, 0, AR),
    "dit": Component("DiT", 6_926_882_880, 6_857_162_752, "transformer", True, 30, 226_578_432, 226_492_416),
    "glyph_encoder": Component("glyph encoder (ByT5)", 217_657_472, 217_055_232, "text_encoder"),
    "vae": Component("VAE", 414_501_539, 8_388_608, "vae"),
}
PRIOR, DECODE = ("ar_language_model", "ar_vision", "ar_vq"), ("dit", "glyph_encoder", "vae")
ROLE_COMPONENTS = {"prior": PRIOR, "decode": DECODE, "all": PRIOR + DECODE}

# Shapes the activation formulas use (the released ones; the test reads them off the meta modules).
AR_LAYERS, AR_KV_HEADS, AR_HEAD_DIM, AR_INTERMEDIATE = 40, 2, 128, 13696
DIT_HIDDEN, DIT_FF = 4096, 16384  # the DiT's width and its feed-forward's inner width
VAE_FULL_RES_CHANNELS = 512  # the widest tensor the VAE decoder holds at the output's resolution
VAE_FACTOR, DIT_PATCH, AR_FACTOR = 8, 2, 32  # pixels per latent, latents per DiT token, pixels per AR token
PROMPT_TOKENS = 512  # the AR prompt budget assumed (a long prompt; text-to-image)
GLYPH_TOKENS = 256  # ByT5 tokens of the quoted text assumed

WEIGHTS_SOURCE = (
    "meta-device parameter counts (bench/full_size.py) x 2 bytes; int8/fp8: Linear weights 1 byte"
)
KV_SOURCE = (
    f"AR KV cache: 2 x {AR_LAYERS} layers x {AR_KV_HEADS} KV heads x {AR_HEAD_DIM} x ({PROMPT_TOKENS} prompt "
    "+ generated tokens) x 2 bytes per row, plus the prompt's MLP in the prefill"
)
DIT_SOURCE = (
    f"DiT (estimate): (image tokens + {GLYPH_TOKENS} glyph tokens) x (2 x {DIT_FF} + 4 x {DIT_HIDDEN}) x "
    "2 bytes, one block's feed-forward input, output and residuals, one guidance pass at a time"
)
VAE_SOURCE = (
    f"VAE decode (estimate): 3 tensors of {VAE_FULL_RES_CHANNELS} channels x H x W x 2 bytes at the "
    "output's resolution (input, normalised, activated)"
)


def ar_generated_tokens(width: int, height: int, references: bool = False) -> int:
    """Tokens the AR stage generates for one image, as GlmImageProcessor and the pipeline's
    `_compute_generation_params` count them: the target grid (one token per 32x32 pixels), and for
    text-to-image first a small preview grid (16x16 tokens for a square), plus the end token."""
    token_h, token_w = height // AR_FACTOR, width // AR_FACTOR
    if references:
        return token_h * token_w + 1
    ratio = token_h / token_w
    preview = int(sqrt(ratio) * AR_FACTOR // 2) * int(sqrt(1 / ratio) * AR_FACTOR // 2)
    return token_h * token_w + preview + 1


def ar_activation_bytes(width: int, height: int, rows: int) -> int:
    """KV cache of `rows` images generated together, and the prefill's MLP (gate and up projections)."""
    sequence = PROMPT_TOKENS + ar_generated_tokens(width, height)
    kv = 2 * AR_LAYERS * AR_KV_HEADS * AR_HEAD_DIM * sequence * BF16
    prefill = PROMPT_TOKENS * 2 * AR_INTERMEDIATE * BF16
    return rows * (kv + prefill)


def dit_activation_bytes(width: int, height: int) -> int:
    """The DiT's peak in one block, batch 1 (the engine denoises row by row, guidance passes in turn)."""
    tokens = (height // (VAE_FACTOR * DIT_PATCH)) * (width // (VAE_FACTOR * DIT_PATCH)) + GLYPH_TOKENS
    return tokens * (2 * DIT_FF + 4 * DIT_HIDDEN) * BF16


def vae_activation_bytes(width: int, height: int) -> int:
    return 3 * VAE_FULL_RES_CHANNELS * width * height * BF16


def reference_bytes(width: int, height: int) -> tuple[int, int]:
    """What one reference image of width x height adds for image-to-image (not in the plan's figures):
    to the DiT stage, its keys and values in every block (one token per 16x16 pixels); to the AR stage,
    per row, its prompt tokens' KV cache (one token per 16x16 pixels too)."""
    tokens = (height // (VAE_FACTOR * DIT_PATCH)) * (width // (VAE_FACTOR * DIT_PATCH))
    dit = 2 * COMPONENTS["dit"].blocks * DIT_HIDDEN * tokens * BF16
    return dit, 2 * AR_LAYERS * AR_KV_HEADS * AR_HEAD_DIM * tokens * BF16


def _weight_bytes(params: int, linear: int, quantized: bool) -> int:
    return linear * QUANTIZED_BYTES + (params - linear) * BF16 if quantized else params * BF16


def component_bytes(name: str, quantize: str = "none", offload: str = "none") -> int:
    """A component's weights on the GPU: all, or under offload=group the unstreamed ones + resident blocks."""
    c = COMPONENTS[name]
    quantized = c.quantized and quantize != "none"
    if offload == "group" and c.blocks:
        rest = c.params - c.blocks * c.block
        rest_linear = c.linear - c.blocks * c.block_linear
        one = _weight_bytes(c.block, c.block_linear, quantized)
        return _weight_bytes(rest, rest_linear, quantized) + GROUP_RESIDENT_BLOCKS * one
    return _weight_bytes(c.params, c.linear, quantized)


class Figure(NamedTuple):
    """One line of an estimate: what, how many GiB, and where the number comes from."""

    label: str
    gib: float
    source: str


class Estimate(NamedTuple):
    """A worker's expected GPU memory at one output size: its peak and the figures it is made of."""

    role: Role
    quantize: str
    offload: str
    size: int
    peak_gib: float
    figures: tuple[Figure, ...]


def _activations(role: Role, size: int, rows: int) -> dict[str, Figure]:
    """The activation figures of the stages a role runs, by the pipeline component that holds them."""
    found = {}
    if role in ("all", "prior"):
        gib = ar_activation_bytes(size, size, rows) / GIB
        found["vision_language_encoder"] = Figure(f"AR KV cache, {rows} rows at {size}²", gib, KV_SOURCE)
    if role in ("all", "decode"):
        found["transformer"] = Figure(f"DiT at {size}²", dit_activation_bytes(size, size) / GIB, DIT_SOURCE)
        found["vae"] = Figure(f"VAE decode at {size}²", vae_activation_bytes(size, size) / GIB, VAE_SOURCE)
    return found


def estimate(
    role: Role, quantize: str, offload: str, size: int = 1024, rows: int = 8, gpu: bool = True
) -> Estimate:
    """Expected peak of one worker of `role` at `size`² images, its AR stage batching `rows` images.

    offload none/group: the resident weights plus the largest stage's activations (the stages run in
    turn). offload=model: one pipeline component on the GPU at a time, so the peak is the largest of
    (a component's weights + its stage's activations)."""
    names = ROLE_COMPONENTS[role]
    weights = {name: component_bytes(name, quantize, offload) / GIB for name in names}
    activations = _activations(role, size, rows)
    figures = [Figure(f"{COMPONENTS[n].label} weights", gib, WEIGHTS_SOURCE) for n, gib in weights.items()]
    figures += activations.values()
    if offload == "model":
        parts: dict[str, float] = {}
        for name, gib in weights.items():
            parts[COMPONENTS[name].part] = parts.get(COMPONENTS[name].part, 0.0) + gib
        peak = max(gib + (activations[p].gib if p in activations else 0.0) for p, gib in parts.items())
    else:
        peak = sum(weights.values()) + max(figure.gib for figure in activations.values())
    if gpu:
        figures.append(Figure("CUDA context", CUDA_CONTEXT_GIB, "assumed per worker process"))
        peak += CUDA_CONTEXT_GIB
    return Estimate(role, quantize, offload, size, peak, tuple(figures))
