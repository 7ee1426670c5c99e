"""Weight quantization of the two big modules, through torchao: less GPU memory for the same model.

Only the AR language model's decoder layers (8.2B of the AR model's 10.1B parameters) and the DiT (6.9B) are
quantized; the vision tower, VQ model, AR embeddings and head, glyph encoder and VAE (about 2.5B together,
and the parts most sensitive to rounding) keep their dtype.

  int8  weight-only, one scale per output row (`Int8WeightOnlyConfig`): about half of bf16's bytes; runs
        wherever torch does (CPU included), activations stay in the model's dtype.
  fp8   float8 (e4m3) weights, one scale per row, upcast for the matmuls (`Float8WeightOnlyConfig`): also
        about half; CUDA capability 8.9+ (Ada, Hopper, Blackwell), refused elsewhere before loading. fp8
        matmuls (`Float8DynamicActivationFloat8WeightConfig`) failed on the DiT on an H200 (cuBLAS "not
        supported"; torch 2.11, torchao 0.17), and there both fp8 forms were slower than int8 and erred more.

Opt-in: bf16 is what the model was released in (docs/benchmarks.md has each mode's measured error).
"""

from __future__ import annotations

import itertools
import logging

import torch

QUANTIZE_MODES = ("none", "int8", "fp8")
FP8_CAPABILITY = (8, 9)
TORCHAO_HINT = "install torchao (pip install 'torchao>=0.18,<0.19'), which glm-image-server depends on"


def check_quantize(mode: str, device: torch.device) -> None:
    """Refuse a mode this device cannot run (RuntimeError: one line from the CLI), before anything loads."""
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZE_MODES)}, not {mode!r}")
    if mode == "fp8" and device.type != "cuda":
        raise RuntimeError(
            f"quantize=fp8 needs a CUDA GPU of compute capability 8.9 or higher (Ada, Hopper, "
            f"Blackwell), not the {device.type} device; use quantize=int8, which runs everywhere"
        )
    if mode == "fp8" and (capability := torch.cuda.get_device_capability(device)) < FP8_CAPABILITY:
        raise RuntimeError(
            f"quantize=fp8 needs CUDA compute capability 8.9 or higher; {torch.cuda.get_device_name(device)} "
            f"has {capability[0]}.{capability[1]}; use quantize=int8"
        )
    if mode != "none":
        _torchao()


def _torchao():
    """torchao, imported quietly (it warns about CUDA kernels it cannot load on a CPU-only torch)."""
    logging.getLogger("torchao").setLevel(logging.ERROR)
    try:
        import torchao.quantization
    except ImportError as exc:
        raise RuntimeError(f"quantization needs torchao: {TORCHAO_HINT} ({exc})") from exc
    return torchao.quantization


def quantized_modules(pipe) -> dict[str, torch.nn.Module]:
    """The modules quantization applies to, among those this pipeline has (a role loads some only)."""
    modules: dict[str, torch.nn.Module] = {}
    vle = getattr(pipe, "vision_language_encoder", None)
    if vle is not None:
        modules["ar_language_model"] = vle.model.language_model.layers
    transformer = getattr(pipe, "transformer", None)
    if transformer is not None:
        modules["dit"] = transformer
    return modules


def quantize_pipeline(pipe, mode: str, device: torch.device | None = None) -> list[str]:
    """Quantize the big modules' Linear weights in place (on `device` first if given); their names."""
    if mode == "none":
        return []
    q = _torchao()
    if (config_class := {"int8": q.Int8WeightOnlyConfig, "fp8": q.Float8WeightOnlyConfig}.get(mode)) is None:
        raise ValueError(f"no torchao config for quantize={mode!r}")
    config = config_class()
    modules = quantized_modules(pipe)
    for module in modules.values():
        q.quantize_(module, config, filter_fn=lambda m, _fqn: isinstance(m, torch.nn.Linear), device=device)
    return list(modules)


def tensor_bytes(tensor: torch.Tensor) -> int:
    """Bytes a tensor holds; a torchao tensor subclass by its inner tensors, not the dtype it stands for."""
    flatten = getattr(tensor, "__tensor_flatten__", None)
    if flatten is None:
        return tensor.numel() * tensor.element_size()
    names, _ = flatten()
    return sum(tensor_bytes(getattr(tensor, name)) for name in names if getattr(tensor, name) is not None)


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers as stored (quantized: their int8/fp8 data and scales)."""
    return sum(tensor_bytes(t) for t in itertools.chain(module.parameters(), module.buffers()))
